// Package sentiment scores the sentiment of English text with VADER (Hutto & Gilbert,
// ICWSM 2014), reproducing the reference Python implementation vaderSentiment 3.3.1 score
// for score, quirks included, so that results match what users of the reference see.
//
// The lexicons are those of cjhutto/vaderSentiment (MIT licence), embedded in the package;
// see README.md.
package sentiment

import (
	"bytes"
	"math"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Scores are VADER's scores for one text, as the reference rounds them.
type Scores struct {
	Compound float64 `json:"compound"`
	Pos      float64 `json:"pos"`
	Neu      float64 `json:"neu"`
	Neg      float64 `json:"neg"`
}

// Analyzer scores texts. It is safe for concurrent use: after New it is read-only.
type Analyzer struct {
	words  map[string]wordInfo
	emojis map[rune]string
}

// New returns an Analyzer loaded with the embedded lexicons. Loading takes about a
// millisecond, so build one and share it.
func New() *Analyzer {
	return &Analyzer{words: buildWords(), emojis: buildEmojis()}
}

var defaultAnalyzer = sync.OnceValue(New)

// Default returns a process-wide Analyzer, built on first use.
func Default() *Analyzer { return defaultAnalyzer() }

// token is what the rules need of one word of the text.
type token struct {
	wordInfo
	negated bool // the reference's negated([word]): in NEGATE or contains "n't"
	upper   bool // the original word's str.isupper()
}

// scratch is per-call working memory, pooled so that scoring allocates nothing.
type scratch struct {
	toks    []token
	sent    []float64
	low     []byte
	nonzero []int
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// maxPooledTokens keeps one huge text from pinning its buffers in the pool.
const maxPooledTokens = 1 << 14

// PolarityScores is the reference's SentimentIntensityAnalyzer.polarity_scores.
func (a *Analyzer) PolarityScores(text string) Scores {
	text = a.replaceEmojis(text)
	sc := scratchPool.Get().(*scratch)
	defer func() {
		if cap(sc.toks) <= maxPooledTokens {
			scratchPool.Put(sc)
		}
	}()
	capDiff := a.tokenize(sc, text)
	toks := sc.toks
	sent := sc.sent[:0]
	for i := range toks {
		if toks[i].isBooster ||
			(i < len(toks)-1 && toks[i].id == wKind && toks[i+1].id == wOf) {
			sent = append(sent, 0)
			continue
		}
		sent = append(sent, sentimentValence(toks, i, capDiff))
	}
	sc.sent = sent
	butCheck(sc)
	return scoreValence(sent, text)
}

// replaceEmojis replaces every emoji code point by its description, preceded by a space
// unless the previous character was a space (never followed by one), as the reference does.
// It allocates only for texts that contain an emoji.
func (a *Analyzer) replaceEmojis(text string) string {
	first := -1
	for i := 0; i < len(text); i++ {
		if text[i] < utf8.RuneSelf {
			continue
		}
		r, size := utf8.DecodeRuneInString(text[i:])
		if _, ok := a.emojis[r]; ok && size > 1 {
			first = i
			break
		}
		i += size - 1
	}
	if first < 0 {
		return text
	}
	var b strings.Builder
	b.Grow(len(text) + 32)
	b.WriteString(text[:first])
	prevSpace := first == 0 || text[first-1] == ' '
	for i := first; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		if desc, ok := a.emojis[r]; ok && size > 1 {
			if !prevSpace {
				b.WriteByte(' ')
			}
			b.WriteString(desc)
			prevSpace = false
		} else {
			b.WriteString(text[i : i+size])
			prevSpace = r == ' '
		}
		i += size
	}
	return b.String()
}

// ASCII character classes: Python's whitespace (str.split splits on \x1c-\x1f too) and
// string.punctuation.
const (
	cSpace = 1 << iota
	cPunct
)

var asciiClass = func() (t [utf8.RuneSelf]uint8) {
	for _, c := range "\t\n\v\f\r\x1c\x1d\x1e\x1f " {
		t[c] = cSpace
	}
	for _, c := range "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~" {
		t[c] = cPunct
	}
	return t
}()

// isSpaceNonASCII is Python's str.isspace for code points >= 0x80.
func isSpaceNonASCII(r rune) bool {
	switch {
	case r == 0x85, r == 0xa0, r == 0x1680, 0x2000 <= r && r <= 0x200a,
		r == 0x2028, r == 0x2029, r == 0x202f, r == 0x205f, r == 0x3000:
		return true
	}
	return false
}

// tokenize is SentiText: str.split() then _strip_punc_if_word on each word. It fills
// sc.toks and returns allcap_differential.
func (a *Analyzer) tokenize(sc *scratch, text string) (capDiff bool) {
	sc.toks = sc.toks[:0]
	upper := 0
	for i := 0; i < len(text); {
		if c := text[i]; c < utf8.RuneSelf {
			if asciiClass[c] == cSpace {
				i++
				continue
			}
		} else if r, size := utf8.DecodeRuneInString(text[i:]); isSpaceNonASCII(r) {
			i += size
			continue
		}
		start := i
		for i < len(text) {
			if c := text[i]; c < utf8.RuneSelf {
				if asciiClass[c] == cSpace {
					break
				}
				i++
			} else {
				r, size := utf8.DecodeRuneInString(text[i:])
				if isSpaceNonASCII(r) {
					break
				}
				i += size
			}
		}
		t := a.newToken(sc, stripPunct(text[start:i]))
		if t.upper {
			upper++
		}
		sc.toks = append(sc.toks, t)
	}
	n := len(sc.toks)
	return 0 < n-upper && n-upper < n
}

// stripPunct is _strip_punc_if_word: strip string.punctuation from both ends unless that
// leaves two code points or fewer (likely an emoticon such as ":)"), then keep the word.
func stripPunct(w string) string {
	s, e := 0, len(w)
	for s < e && w[s] < utf8.RuneSelf && asciiClass[w[s]] == cPunct {
		s++
	}
	for e > s && w[e-1] < utf8.RuneSelf && asciiClass[w[e-1]] == cPunct {
		e--
	}
	if e-s <= 2 || (e-s <= 8 && utf8.RuneCountInString(w[s:e]) <= 2) {
		return w
	}
	return w[s:e]
}

// newToken looks the lower-cased word up and records its case.
func (a *Analyzer) newToken(sc *scratch, w string) token {
	sc.low = appendLower(sc.low[:0], w)
	t := token{wordInfo: a.words[string(sc.low)], upper: isUpper(w)}
	t.negated = t.negate || bytes.Contains(sc.low, []byte("n't"))
	return t
}

// appendLower appends Python's str.lower() of s (full case mapping; the final-sigma rule
// is left out as no key contains a sigma).
func appendLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, c)
		case r == 'İ':
			dst = append(dst, "i\u0307"...)
		default:
			dst = utf8.AppendRune(dst, unicode.ToLower(r))
		}
		i += size
	}
	return dst
}

// isUpper is Python's str.isupper(): at least one cased character and no lower-case or
// title-case one, with Python's Lowercase/Uppercase properties (which include
// Other_Lowercase and Other_Uppercase).
func isUpper(s string) bool {
	cased := false
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case 'a' <= c && c <= 'z':
				return false
			case 'A' <= c && c <= 'Z':
				cased = true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		if unicode.IsLower(r) || unicode.Is(unicode.Other_Lowercase, r) || unicode.IsTitle(r) {
			return false
		}
		if unicode.IsUpper(r) || unicode.Is(unicode.Other_Uppercase, r) {
			cased = true
		}
	}
	return cased
}

// Products that feed an addition are wrapped in float64() throughout: the conversion
// forbids fusing them into an FMA, which would change the last bits compared with Python.

// sentimentValence is the reference's sentiment_valence for token i (not a booster).
func sentimentValence(toks []token, i int, capDiff bool) float64 {
	t := &toks[i]
	if !t.inLex {
		return 0
	}
	v := t.valence
	// "no" before another lexicon word negates that word instead of counting itself.
	if t.id == wNo && i != len(toks)-1 && toks[i+1].inLex {
		v = 0
	}
	if (i > 0 && toks[i-1].id == wNo) || (i > 1 && toks[i-2].id == wNo) ||
		(i > 2 && toks[i-3].id == wNo && (toks[i-1].id == wOr || toks[i-1].id == wNor)) {
		v = float64(t.valence * nScalar)
	}
	if t.upper && capDiff {
		if v > 0 {
			v += cIncr
		} else {
			v -= cIncr
		}
	}
	for start := 0; start < 3; start++ {
		if i <= start || toks[i-start-1].inLex {
			continue
		}
		s := scalarIncDec(&toks[i-start-1], v, capDiff)
		if start == 1 && s != 0 {
			s = float64(s * 0.95)
		}
		if start == 2 && s != 0 {
			s = float64(s * 0.9)
		}
		v += s
		v = negationCheck(v, toks, start, i)
		if start == 2 {
			v = specialIdiomsCheck(v, toks, i)
		}
	}
	return leastCheck(v, toks, i)
}

// scalarIncDec is the reference's scalar_inc_dec for the preceding word w.
func scalarIncDec(w *token, valence float64, capDiff bool) float64 {
	if !w.isBooster {
		return 0
	}
	s := w.booster
	if valence < 0 {
		s = -s
	}
	if w.upper && capDiff {
		if valence > 0 {
			s += cIncr
		} else {
			s -= cIncr
		}
	}
	return s
}

// negationCheck is the reference's _negation_check, including its operator-precedence
// quirk: at distance 3 a "so" or "this" just before the word multiplies by 1.25 whatever
// precedes it.
func negationCheck(v float64, toks []token, start, i int) float64 {
	switch start {
	case 0:
		if toks[i-1].negated {
			v = float64(v * nScalar)
		}
	case 1:
		switch w2, w1 := toks[i-2].id, toks[i-1].id; {
		case w2 == wNever && (w1 == wSo || w1 == wThis):
			v = float64(v * 1.25)
		case w2 == wWithout && w1 == wDoubt:
		case toks[i-2].negated:
			v = float64(v * nScalar)
		}
	case 2:
		switch w3, w2, w1 := toks[i-3].id, toks[i-2].id, toks[i-1].id; {
		case (w3 == wNever && (w2 == wSo || w2 == wThis)) || w1 == wSo || w1 == wThis:
			v = float64(v * 1.25)
		case w3 == wWithout && (w2 == wDoubt || w1 == wDoubt):
		case toks[i-3].negated:
			v = float64(v * nScalar)
		}
	}
	return v
}

// specialIdiomsCheck is the reference's _special_idioms_check (called with i >= 3).
func specialIdiomsCheck(v float64, toks []token, i int) float64 {
	w3, w2, w1, w0 := toks[i-3].id, toks[i-2].id, toks[i-1].id, toks[i].id
	if s, ok := special2(w1, w0); ok {
		v = s
	} else if s, ok := special3(w2, w1, w0); ok {
		v = s
	} else if s, ok := special2(w2, w1); ok {
		v = s
	} else if s, ok := special3(w3, w2, w1); ok {
		v = s
	} else if s, ok := special2(w3, w2); ok {
		v = s
	}
	if len(toks)-1 > i {
		if s, ok := special2(w0, toks[i+1].id); ok {
			v = s
		}
	}
	if len(toks)-1 > i+1 {
		if s, ok := special3(w0, toks[i+1].id, toks[i+2].id); ok {
			v = s
		}
	}
	// Booster bigrams such as "kind of" before the word (a trigram can never match).
	if b, ok := boosterBigram(w3, w2); ok {
		v += b
	}
	if b, ok := boosterBigram(w2, w1); ok {
		v += b
	}
	return v
}

// leastCheck is the reference's _least_check: "least" before a word negates it, except in
// "at least" and "very least".
func leastCheck(v float64, toks []token, i int) float64 {
	if i > 0 && !toks[i-1].inLex && toks[i-1].id == wLeast {
		if i == 1 || (toks[i-2].id != wAt && toks[i-2].id != wVery) {
			v = float64(v * nScalar)
		}
	}
	return v
}

// butCheck is the reference's _but_check, including its bug: it looks each value up with
// list.index, so when two words share a valence the first one is scaled again and the
// later one not at all. Zeros stay zero under scaling, so only non-zero entries are visited.
func butCheck(sc *scratch) {
	bi := -1
	for i := range sc.toks {
		if sc.toks[i].id == wBut {
			bi = i
			break
		}
	}
	if bi < 0 {
		return
	}
	sent := sc.sent
	nz := sc.nonzero[:0]
	for k, v := range sent {
		if v == 0 {
			continue
		}
		nz = append(nz, k)
		si := k
		for _, j := range nz {
			if sent[j] == v {
				si = j
				break
			}
		}
		if si < bi {
			sent[si] = float64(v * 0.5)
		} else if si > bi {
			sent[si] = float64(v * 1.5)
		}
	}
	sc.nonzero = nz
}

// scoreValence is the reference's score_valence with its rounding.
func scoreValence(sent []float64, text string) Scores {
	if len(sent) == 0 {
		return Scores{}
	}
	sum := 0.0
	for _, s := range sent {
		sum += s
	}
	amp := punctuationEmphasis(text)
	if sum > 0 {
		sum += amp
	} else if sum < 0 {
		sum -= amp
	}
	compound := sum / math.Sqrt(float64(sum*sum)+15)
	compound = max(-1, min(1, compound))

	posSum, negSum, neuCount := 0.0, 0.0, 0
	for _, s := range sent {
		switch {
		case s > 0:
			posSum += s + 1
		case s < 0:
			negSum += s - 1
		default:
			neuCount++
		}
	}
	if posSum > math.Abs(negSum) {
		posSum += amp
	} else if posSum < math.Abs(negSum) {
		negSum -= amp
	}
	total := posSum + math.Abs(negSum) + float64(neuCount)
	return Scores{
		Compound: pyRound(compound, 1e4),
		Pos:      pyRound(math.Abs(posSum/total), 1e3),
		Neu:      pyRound(math.Abs(float64(neuCount)/total), 1e3),
		Neg:      pyRound(math.Abs(negSum/total), 1e3),
	}
}

// punctuationEmphasis is _amplify_ep plus _amplify_qm: up to four "!" add 0.292 each;
// two or three "?" add 0.18 each, more add 0.96.
func punctuationEmphasis(text string) float64 {
	ep := min(strings.Count(text, "!"), 4)
	amp := float64(float64(ep) * 0.292)
	switch qm := strings.Count(text, "?"); {
	case qm > 3:
		amp += 0.96
	case qm > 1:
		amp += float64(float64(qm) * 0.18)
	}
	return amp
}

// pyRound is Python's round(x, d) for scale = 10^d: the decimal with d places nearest to
// the exact binary value of x, ties to even, converted back to the nearest float64.
// It is exact for |x*scale| < 2^51, far beyond VADER's scores.
func pyRound(x, scale float64) float64 {
	a := math.Abs(x)
	p := a * scale
	e := math.FMA(a, scale, -p) // a*scale == p+e exactly
	f := math.Floor(p)
	// The sign of (p-f-0.5)+e tells which way to round; the subtraction is exact for
	// p >= 0.25 and harmlessly inexact below, where the answer is clearly f.
	n := f
	switch d := (p - f - 0.5) + e; {
	case d > 0:
		n = f + 1
	case d == 0 && math.Mod(f, 2) == 1:
		n = f + 1
	}
	return math.Copysign(n/scale, x)
}
