package sentiment

import (
	"encoding/json"
	"math"
	"slices"
	"testing"
)

func checkComprehend(t *testing.T, c Comprehend) {
	t.Helper()
	sum := 0.0
	best := ""
	max := -1.0
	for _, o := range []struct {
		label string
		v     float64
	}{{"POSITIVE", c.Positive}, {"NEGATIVE", c.Negative}, {"NEUTRAL", c.Neutral}, {"MIXED", c.Mixed}} {
		if o.v < 0 || o.v > 1 || math.IsNaN(o.v) {
			t.Fatalf("%+v: %s out of [0,1]", c, o.label)
		}
		if o.v > max {
			best, max = o.label, o.v
		}
		sum += o.v
	}
	if math.Abs(sum-1) > 1e-6 {
		t.Fatalf("%+v: scores sum to %v", c, sum)
	}
	if c.Sentiment != best {
		t.Fatalf("%+v: Sentiment is not the largest score (%s)", c, best)
	}
}

func TestComprehend(t *testing.T) {
	a := New()
	for _, tc := range []struct {
		want  string
		texts []string
	}{
		{"MIXED", []string{
			"I love the food but I hate the service",
			"The food was good but the service was bad",
			"Great product, awful support",
			"The hotel was lovely but the staff were rude and the room was dirty",
			"I love it and I hate it",
		}},
		{"POSITIVE", []string{"I am happy", "I love this phone!!!", "What a wonderful day", "not bad"}},
		{"NEGATIVE", []string{"This is terrible", "I hate Mondays", "The service was awful and slow", "worst movie ever"}},
		{"NEUTRAL", []string{"hello world", "", "The meeting is at 10am in room 4", "It is a table"}},
	} {
		for _, text := range tc.texts {
			c := a.Comprehend(text)
			checkComprehend(t, c)
			if c.Sentiment != tc.want {
				t.Errorf("Comprehend(%q) = %+v, want %s", text, c, tc.want)
			}
			if tc.want == "MIXED" && c.Mixed < 0.35 {
				t.Errorf("Comprehend(%q).Mixed = %v, want high", text, c.Mixed)
			}
			if tc.want != "MIXED" && c.Mixed >= 0.05 {
				t.Errorf("Comprehend(%q).Mixed = %v, want < 0.05 for a one-sided text", text, c.Mixed)
			}
		}
	}
}

func TestComprehendMonotone(t *testing.T) {
	// More negative evidence against the same positive evidence means more Mixed, up to
	// balance; a more decided compound means less Neutral.
	prev := -1.0
	for _, neg := range []float64{0, 0.05, 0.1, 0.2, 0.3} {
		c := ToComprehend(Scores{Compound: 0.3, Pos: 0.3, Neg: neg, Neu: 0.7 - neg})
		if c.Mixed <= prev && neg > 0 {
			t.Errorf("Mixed did not grow with neg=%v: %+v", neg, c)
		}
		prev = c.Mixed
	}
	weak := ToComprehend(Scores{Compound: 0.2, Pos: 0.4, Neu: 0.6})
	strong := ToComprehend(Scores{Compound: 0.8, Pos: 0.4, Neu: 0.6})
	if strong.Neutral >= weak.Neutral || strong.Positive <= weak.Positive {
		t.Errorf("a stronger compound should move Neutral to Positive: weak %+v, strong %+v", weak, strong)
	}
}

func TestComprehendJSON(t *testing.T) {
	b, err := json.Marshal(Default().Comprehend("I am happy"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"Mixed", "Negative", "Neutral", "Positive", "Sentiment"}; !slices.Equal(keys, want) {
		t.Errorf("JSON keys %v, want %v", keys, want)
	}
}
