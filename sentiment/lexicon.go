package sentiment

import (
	_ "embed"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The lexicons of cjhutto/vaderSentiment (MIT licence, see LICENSE-VADER.txt and README.md),
// embedded so that the package needs no files at run time.
var (
	//go:embed vader_lexicon.txt
	vaderLexicon string
	//go:embed emoji_utf8_lexicon.txt
	emojiLexicon string
)

// The reference's constants.
const (
	bIncr   = 0.293
	bDecr   = -0.293
	cIncr   = 0.733
	nScalar = -0.74
)

// wordID names the few lower-cased tokens that rules compare by value, so that the rules
// compare small integers instead of strings.
type wordID uint8

const (
	wNone wordID = iota
	wNo
	wOr
	wNor
	wNever
	wSo
	wThis
	wWithout
	wDoubt
	wLeast
	wAt
	wVery
	wBut
	wKind
	wOf
	wSort
	wJust
	wEnough
	wThe
	wShit
	wBomb
	wBad
	wAss
	wBus
	wStop
	wYeah
	wRight
	wKiss
	wDeath
	wTo
	wDie
	wFor
	wBeating
	wHeart
	wBroken
	numWordIDs
)

var wordIDNames = [numWordIDs]string{
	"", "no", "or", "nor", "never", "so", "this", "without", "doubt", "least", "at", "very",
	"but", "kind", "of", "sort", "just", "enough", "the", "shit", "bomb", "bad", "ass", "bus",
	"stop", "yeah", "right", "kiss", "death", "to", "die", "for", "beating", "heart", "broken",
}

// negateWords is the reference's NEGATE list; negated() also accepts any word containing "n't".
var negateWords = []string{
	"aint", "arent", "cannot", "cant", "couldnt", "darent", "didnt", "doesnt",
	"ain't", "aren't", "can't", "couldn't", "daren't", "didn't", "doesn't",
	"dont", "hadnt", "hasnt", "havent", "isnt", "mightnt", "mustnt", "neither",
	"don't", "hadn't", "hasn't", "haven't", "isn't", "mightn't", "mustn't",
	"neednt", "needn't", "never", "none", "nope", "nor", "not", "nothing", "nowhere",
	"oughtnt", "shant", "shouldnt", "uhuh", "wasnt", "werent",
	"oughtn't", "shan't", "shouldn't", "uh-uh", "wasn't", "weren't",
	"without", "wont", "wouldnt", "won't", "wouldn't", "rarely", "seldom", "despite",
}

// boosterWords is the single-word part of the reference's BOOSTER_DICT; its two-word
// entries ("just enough", "kind of", "sort of") are matched by boosterBigram.
var boosterWords = map[string]float64{
	"absolutely": bIncr, "amazingly": bIncr, "awfully": bIncr,
	"completely": bIncr, "considerable": bIncr, "considerably": bIncr,
	"decidedly": bIncr, "deeply": bIncr, "effing": bIncr, "enormous": bIncr, "enormously": bIncr,
	"entirely": bIncr, "especially": bIncr, "exceptional": bIncr, "exceptionally": bIncr,
	"extreme": bIncr, "extremely": bIncr,
	"fabulously": bIncr, "flipping": bIncr, "flippin": bIncr, "frackin": bIncr, "fracking": bIncr,
	"fricking": bIncr, "frickin": bIncr, "frigging": bIncr, "friggin": bIncr, "fully": bIncr,
	"fuckin": bIncr, "fucking": bIncr, "fuggin": bIncr, "fugging": bIncr,
	"greatly": bIncr, "hella": bIncr, "highly": bIncr, "hugely": bIncr,
	"incredible": bIncr, "incredibly": bIncr, "intensely": bIncr,
	"major": bIncr, "majorly": bIncr, "more": bIncr, "most": bIncr, "particularly": bIncr,
	"purely": bIncr, "quite": bIncr, "really": bIncr, "remarkably": bIncr,
	"so": bIncr, "substantially": bIncr,
	"thoroughly": bIncr, "total": bIncr, "totally": bIncr, "tremendous": bIncr, "tremendously": bIncr,
	"uber": bIncr, "unbelievably": bIncr, "unusually": bIncr, "utter": bIncr, "utterly": bIncr,
	"very":   bIncr,
	"almost": bDecr, "barely": bDecr, "hardly": bDecr,
	"kinda": bDecr, "kindof": bDecr, "kind-of": bDecr,
	"less": bDecr, "little": bDecr, "marginal": bDecr, "marginally": bDecr,
	"occasional": bDecr, "occasionally": bDecr, "partly": bDecr,
	"scarce": bDecr, "scarcely": bDecr, "slight": bDecr, "slightly": bDecr, "somewhat": bDecr,
	"sorta": bDecr, "sortof": bDecr, "sort-of": bDecr,
}

// boosterBigram is BOOSTER_DICT for two-word keys.
func boosterBigram(a, b wordID) (float64, bool) {
	if (a == wJust && b == wEnough) || ((a == wKind || a == wSort) && b == wOf) {
		return bDecr, true
	}
	return 0, false
}

// special2 and special3 are the reference's SPECIAL_CASES for two- and three-word keys
// (its one-word key "badass" can never equal a joined sequence, so it never applies).
func special2(a, b wordID) (float64, bool) {
	switch {
	case a == wThe && (b == wShit || b == wBomb):
		return 3, true
	case a == wBad && b == wAss:
		return 1.5, true
	case a == wBus && b == wStop:
		return 0, true
	case a == wYeah && b == wRight:
		return -2, true
	case a == wBeating && b == wHeart:
		return 3.1, true
	case a == wBroken && b == wHeart:
		return -2.9, true
	}
	return 0, false
}

func special3(a, b, c wordID) (float64, bool) {
	switch {
	case a == wKiss && b == wOf && c == wDeath:
		return -1.5, true
	case a == wTo && b == wDie && c == wFor:
		return 3, true
	}
	return 0, false
}

// wordInfo is everything the rules need to know about one lower-cased token, so that each
// token costs a single map lookup.
type wordInfo struct {
	valence   float64 // lexicon valence, when inLex
	booster   float64 // BOOSTER_DICT value, when isBooster
	inLex     bool
	isBooster bool
	negate    bool // in the NEGATE list
	id        wordID
}

// buildWords merges the lexicon, the booster and negation lists and the rule words into
// one table keyed by lower-cased token.
func buildWords() map[string]wordInfo {
	words := make(map[string]wordInfo, 8192)
	// make_lex_dict: first two tab-separated fields of each non-empty line; later lines win.
	for _, line := range strings.Split(strings.TrimRight(vaderLexicon, "\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(strings.TrimSpace(line), "\t")
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			panic("sentiment: bad embedded lexicon line " + strconv.Quote(line))
		}
		// The reference looks words up by their lower-cased form, so keys that lower-case
		// to something else (":-P", ":Þ", ...) can never match: leave them out.
		if string(appendLower(nil, f[0])) != f[0] {
			continue
		}
		w := words[f[0]]
		w.valence, w.inLex = v, true
		words[f[0]] = w
	}
	for k, v := range boosterWords {
		w := words[k]
		w.booster, w.isBooster = v, true
		words[k] = w
	}
	for _, k := range negateWords {
		w := words[k]
		w.negate = true
		words[k] = w
	}
	for id := wNo; id < numWordIDs; id++ {
		k := wordIDNames[id]
		w := words[k]
		w.id = id
		words[k] = w
	}
	return words
}

// buildEmojis is make_emoji_dict restricted to one-code-point keys: the reference replaces
// emojis while iterating over single code points, so longer keys never match.
func buildEmojis() map[rune]string {
	emojis := make(map[rune]string, 2048)
	for _, line := range strings.Split(strings.TrimRight(emojiLexicon, "\n"), "\n") {
		f := strings.Split(strings.TrimSpace(line), "\t")
		if len(f) < 2 {
			panic("sentiment: bad embedded emoji lexicon line " + strconv.Quote(line))
		}
		r, size := utf8.DecodeRuneInString(f[0])
		if size == len(f[0]) && r != utf8.RuneError {
			emojis[r] = f[1]
		}
	}
	return emojis
}
