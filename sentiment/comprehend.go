package sentiment

import "math"

// Comprehend is the shape of AWS Comprehend DetectSentiment's answer. Without Sentiment it
// encodes as Comprehend's SentimentScore alone (package comprehend answers so by default).
type Comprehend struct {
	Sentiment string  `json:"Sentiment,omitempty"` // POSITIVE, NEGATIVE, NEUTRAL or MIXED: the largest score
	Positive  float64 `json:"Positive"`
	Negative  float64 `json:"Negative"`
	Neutral   float64 `json:"Neutral"`
	Mixed     float64 `json:"Mixed"`
}

// Comprehend scores text with VADER and converts the result with ToComprehend.
func (a *Analyzer) Comprehend(text string) Comprehend {
	return ToComprehend(a.PolarityScores(text))
}

// ToComprehend derives Comprehend-shaped scores from VADER's, because callers that speak
// Comprehend expect four probabilities and a label rather than VADER's proportions.
//
// The rule, with P, N, U VADER's pos, neg, neu and C its compound:
//   - Neutral = U*(1-|C|): neutral words count less the more decided the text is overall,
//     otherwise the filler words of any sentence would outvote its sentiment.
//   - The rest, P+N+U*|C|, is the sentiment mass. Its share Mixed is the balance
//     2*min(P,N)/(P+N): 0 for one-sided texts, 1 when positive and negative are equal.
//   - What remains of the mass is split between Positive and Negative as P : N.
//   - All four are divided by P+N+U (VADER's rounding may leave it off 1), so they sum
//     to 1; a text without sentiment words (P+N = 0, e.g. "" or "hello world") is
//     Neutral = 1.
//
// Sentiment is the label of the largest score (ties go to the first of POSITIVE, NEGATIVE,
// NEUTRAL, MIXED). Every score moves monotonically with the VADER evidence behind it.
func ToComprehend(s Scores) Comprehend {
	p, n, u := s.Pos, s.Neg, s.Neu
	if p+n <= 0 {
		return Comprehend{Sentiment: "NEUTRAL", Neutral: 1}
	}
	total := p + n + u
	neutral := u * (1 - math.Abs(s.Compound))
	mass := total - neutral
	mixed := mass * 2 * min(p, n) / (p + n)
	rest := mass - mixed
	c := Comprehend{
		Positive: rest * p / (p + n) / total,
		Negative: rest * n / (p + n) / total,
		Neutral:  neutral / total,
		Mixed:    mixed / total,
	}
	label, best := "POSITIVE", c.Positive
	if c.Negative > best {
		label, best = "NEGATIVE", c.Negative
	}
	if c.Neutral > best {
		label, best = "NEUTRAL", c.Neutral
	}
	if c.Mixed > best {
		label = "MIXED"
	}
	c.Sentiment = label
	return c
}
