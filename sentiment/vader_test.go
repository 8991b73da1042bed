package sentiment

import (
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
)

// TestRules checks each rule of the reference on hand-made sentences. The expected values
// follow from the reference algorithm; a few derivations are spelt out:
//
//   - "The book was good.": good = 1.9, compound = 1.9/sqrt(1.9²+15) = 0.4404,
//     pos = (1.9+1)/((1.9+1)+3 neutral words) = 0.492.
//   - "The book is so good.": good = 1.9, + 0.293 for the booster "so" = 2.193, then
//     ×1.25 because the word just before is "so" (the reference's precedence quirk at
//     distance 3) = 2.74125; compound = 2.74125/sqrt(2.74125²+15) = 0.5777.
//   - "nice but adequate": nice = 1.8 is halved to 0.9; adequate = 0.9 is then found by
//     list.index at position 0, so nice is halved again (0.45) and adequate keeps 0.9:
//     compound = 1.35/sqrt(1.35²+15) = 0.3291.
//   - "NO good food": "no" before a lexicon word scores 0.0, then -0.733 as an ALL-CAPS
//     word in mixed-case text; good = 1.9×-0.74 = -1.406; compound = -2.139/sqrt(2.139²+15)
//     = -0.4835.
//   - "No.": the token stays "No." (stripping would leave two characters), which is not
//     in the lexicon, so the text is neutral.
func TestRules(t *testing.T) {
	a := New()
	for _, tc := range []struct {
		name, text string
		want       Scores
	}{
		{"lexicon word", "The book was good.", Scores{0.4404, 0.492, 0.508, 0.0}},
		{"no lexicon word", "The book was on the table.", Scores{0.0, 0.0, 1.0, 0.0}},
		{"empty", "", Scores{0.0, 0.0, 0.0, 0.0}},
		{"only spaces", " \t\n ", Scores{0.0, 0.0, 0.0, 0.0}},
		{"booster", "The book was very good.", Scores{0.4927, 0.444, 0.556, 0.0}},
		{"booster at distance 2 damped 0.95", "The book was very much good.", Scores{0.4902, 0.389, 0.611, 0.0}},
		{"booster at distance 3 damped 0.9", "The book was very much more good.", Scores{0.5356, 0.366, 0.634, 0.0}},
		{"dampener", "The book was barely good.", Scores{0.3832, 0.395, 0.605, 0.0}},
		{"booster flips sign for negative word", "The book was extremely bad.", Scores{-0.5849, 0.0, 0.513, 0.487}},
		{"booster alone scores zero", "very", Scores{0.0, 0.0, 1.0, 0.0}},
		{"all caps word with mixed case", "The book was GOOD.", Scores{0.5622, 0.548, 0.452, 0.0}},
		{"all caps everywhere: no differential", "THE BOOK WAS GOOD.", Scores{0.4404, 0.492, 0.508, 0.0}},
		{"caps booster", "The book was VERY good.", Scores{0.6028, 0.495, 0.505, 0.0}},
		{"pronoun I counts as all caps", "I love it", Scores{0.6369, 0.677, 0.323, 0.0}},
		{"negation", "The book was not good.", Scores{-0.3412, 0.0, 0.624, 0.376}},
		{"negation at distance 2", "The book was not very good.", Scores{-0.3865, 0.0, 0.656, 0.344}},
		{"negation at distance 3", "The book was not that very good.", Scores{-0.3865, 0.0, 0.696, 0.304}},
		{"n't contraction", "It isn't a horrible book.", Scores{0.431, 0.416, 0.584, 0.0}},
		{"n't anywhere in the word", "It ain't good, y'all don't'ness good", Scores{-0.5875, 0.0, 0.454, 0.546}},
		{"never so", "The book was never so good.", Scores{0.6626, 0.47, 0.53, 0.0}},
		{"never this at distance 3", "It has never been this good.", Scores{0.5228, 0.403, 0.597, 0.0}},
		{"so just before at distance 3 (precedence quirk)", "The book is so good.", Scores{0.5777, 0.483, 0.517, 0.0}},
		{"without doubt is not negation", "Without doubt good.", Scores{0.6136, 0.834, 0.166, 0.0}},
		{"without a doubt", "Without a doubt, excellent idea.", Scores{0.7013, 0.659, 0.341, 0.0}},
		{"least negates", "It is the least good movie.", Scores{-0.3412, 0.0, 0.675, 0.325}},
		{"at least does not negate", "It is at least good.", Scores{0.4404, 0.42, 0.58, 0.0}},
		{"very least does not negate", "The very least good.", Scores{0.4902, 0.514, 0.486, 0.0}},
		{"least at start negates", "least good", Scores{-0.3412, 0.0, 0.294, 0.706}},
		{"but scales before by 0.5 and after by 1.5", "The food is good but the service is bad.", Scores{-0.5859, 0.142, 0.511, 0.347}},
		{"only the first but counts", "good but bad but great", Scores{0.431, 0.53, 0.139, 0.331}},
		{"but index quirk: equal values", "nice but adequate", Scores{0.3291, 0.77, 0.23, 0.0}},
		{"kind of", "The book was kind of good.", Scores{0.3832, 0.343, 0.657, 0.0}},
		{"kind alone is a lexicon word", "She is kind.", Scores{0.5267, 0.63, 0.37, 0.0}},
		{"kinda", "The book was kinda good.", Scores{0.3832, 0.395, 0.605, 0.0}},
		{"sort of bigram before a word", "It was sort of a good day", Scores{0.3832, 0.303, 0.697, 0.0}},
		{"the bomb", "This movie is the bomb", Scores{0.6124, 0.5, 0.5, 0.0}},
		{"the shit", "With VADER, sentiment analysis is the shit!", Scores{0.6476, 0.417, 0.583, 0.0}},
		{"bad ass", "On the other hand, VADER is quite bad ass", Scores{0.802, 0.577, 0.423, 0.0}},
		{"yeah right", "Oh my god yeah right", Scores{-0.2263, 0.259, 0.37, 0.37}},
		{"kiss of death", "It was the kiss of death", Scores{-0.6124, 0.0, 0.444, 0.556}},
		{"to die for", "The cake here is to die for", Scores{-0.5994, 0.0, 0.606, 0.394}},
		{"broken heart", "She had a very broken heart", Scores{-0.8316, 0.0, 0.339, 0.661}},
		{"sentiment-laden idioms are not applied", "He cannot cut the mustard", Scores{0.2057, 0.312, 0.688, 0.0}},
		{"emoji replaced by its description", "I got a new job \U0001f600", Scores{0.3612, 0.294, 0.706, 0.0}},
		{"emoji glued to words", "great\U0001f600\U0001f600job", Scores{0.8442, 0.82, 0.18, 0.0}},
		{"emoji with variation selector", "\u2764\ufe0f you", Scores{0.0, 0.0, 1.0, 0.0}},
		{"emoticons kept", "Make sure you :) or :D today!", Scores{0.8633, 0.706, 0.294, 0.0}},
		{"punctuation stripped from words", "'good' (great) bad...", Scores{0.5423, 0.667, 0.0, 0.333}},
		{"short word keeps its punctuation", "ok! ok", Scores{0.3595, 0.714, 0.286, 0.0}},
		{"exclamation", "The book was good!", Scores{0.4926, 0.516, 0.484, 0.0}},
		{"exclamations capped at 4", "The book was good!!!!!!!", Scores{0.6209, 0.576, 0.424, 0.0}},
		{"exclamation on negative", "The book was bad!!", Scores{-0.6229, 0.0, 0.423, 0.577}},
		{"one question mark adds nothing", "The book was good?", Scores{0.4404, 0.492, 0.508, 0.0}},
		{"two question marks", "The book was good??", Scores{0.504, 0.521, 0.479, 0.0}},
		{"four question marks", "The book was good????", Scores{0.594, 0.563, 0.437, 0.0}},
		{"no before a lexicon word", "There is no good option", Scores{-0.3412, 0.0, 0.624, 0.376}},
		{"no at distance 2", "There is no very good option", Scores{-0.5992, 0.0, 0.449, 0.551}},
		{"no or", "no food or fun", Scores{-0.5996, 0.0, 0.29, 0.71}},
		{"no alone", "No.", Scores{0.0, 0.0, 1.0, 0.0}},
		{"no at the end", "There is no", Scores{-0.296, 0.0, 0.476, 0.524}},
		{"NO in caps becomes -0.733", "NO good food", Scores{-0.4835, 0.0, 0.195, 0.805}},
		{"never negates", "I never liked it", Scores{-0.3252, 0.0, 0.563, 0.437}},
		{"nor", "It was not smart, handsome, nor funny.", Scores{-0.7424, 0.0, 0.354, 0.646}},
		{"unicode whitespace splits", "good\u00a0day\u3000great", Scores{0.7906, 0.875, 0.125, 0.0}},
		{"zero width space does not split", "good\u200bday", Scores{0.0, 0.0, 1.0, 0.0}},
		{"mixed", "I love the food but I hate the service", Scores{-0.5346, 0.177, 0.478, 0.345}},
	} {
		if got := a.PolarityScores(tc.text); got != tc.want {
			t.Errorf("%s: PolarityScores(%q) = %+v, want %+v", tc.name, tc.text, got, tc.want)
		}
	}
}

// TestPyRound compares pyRound with correctly rounded decimal formatting, which is what
// Python's round() does.
func TestPyRound(t *testing.T) {
	check := func(x float64, digits int) {
		scale := math.Pow10(digits)
		want, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', digits, 64), 64)
		if got := pyRound(x, scale); got != want || math.Signbit(got) != math.Signbit(want) {
			t.Fatalf("pyRound(%v, %d) = %v, want %v", x, digits, got, want)
		}
	}
	// Exact binary ties round to even, as in Python: round(0.0625, 3) == 0.062.
	for _, x := range []float64{0, 0.0625, 0.1875, 0.3125, 0.03125, 0.5, 1, 0.00005, 0.0005, 0.9995, 0.12345, 0.00015} {
		check(x, 3)
		check(-x, 3)
		check(x, 4)
		check(-x, 4)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		x := r.Float64()*2 - 1
		check(x, 3)
		check(x, 4)
		k := float64(r.IntN(20001) - 10000) // values near the rounding boundaries
		check((k+0.5)/1e4, 4)
		check((k+0.5)/1e3, 3)
	}
}

func TestConcurrent(t *testing.T) {
	texts := []string{
		"I love the food but I hate the service",
		"The book was VERY good!!!",
		"It isn't a horrible book.",
		"Catch utf-8 emoji such as 💘 and 💋 and 😁",
		"no food or fun",
		"",
	}
	a := Default()
	want := make([]Scores, len(texts))
	for i, s := range texts {
		want[i] = a.PolarityScores(s)
	}
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for n := range 500 {
				i := (g + n) % len(texts)
				if got := a.PolarityScores(texts[i]); got != want[i] {
					t.Errorf("PolarityScores(%q) = %+v concurrently, want %+v", texts[i], got, want[i])
					return
				}
			}
		})
	}
	wg.Wait()
	if Default() != a {
		t.Error("Default() returned a different Analyzer")
	}
}

func FuzzPolarityScores(f *testing.F) {
	for _, s := range []string{
		"", "The book was good.", "I love the food but I hate the service", "NO good food!!",
		"kiss of death", "nice but adequate", "great😀😀job", "İ ΣΑΣ ǅ Ⓐ \u212aK", "\xff\xfe:)",
		"never so good????", "at least good", "no food or fun",
	} {
		f.Add(s)
	}
	a := New()
	f.Fuzz(func(t *testing.T, text string) {
		s := a.PolarityScores(text)
		if s.Compound < -1 || s.Compound > 1 {
			t.Fatalf("compound %v out of range for %q", s.Compound, text)
		}
		for _, v := range []float64{s.Pos, s.Neu, s.Neg} {
			if v < 0 || v > 1 {
				t.Fatalf("%+v out of range for %q", s, text)
			}
		}
		// Each share is rounded to 3 places, so the sum may be off by 0.0015.
		if sum := s.Pos + s.Neu + s.Neg; sum != 0 && math.Abs(sum-1) > 0.0015+1e-9 {
			t.Fatalf("pos+neu+neg = %v for %q", sum, text)
		}
		checkComprehend(t, a.Comprehend(text))
	})
}

func BenchmarkAnalyze(b *testing.B) {
	texts := benchTexts(b)
	a := New()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, s := range texts {
			a.PolarityScores(s)
		}
	}
	b.ReportMetric(float64(len(texts)*b.N)/b.Elapsed().Seconds(), "rows/s")
}

func BenchmarkComprehend(b *testing.B) {
	texts := benchTexts(b)
	a := New()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, s := range texts {
			a.Comprehend(s)
		}
	}
	b.ReportMetric(float64(len(texts)*b.N)/b.Elapsed().Seconds(), "rows/s")
}

func benchTexts(b *testing.B) []string {
	rows := loadRows(b, "tweets.tsv")
	texts := make([]string, len(rows))
	for i, r := range rows {
		texts[i] = r.text
	}
	return texts
}
