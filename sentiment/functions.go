package sentiment

import (
	"context"
	"encoding/json"

	"github.com/asyncfn/asyncfn"
)

// Functions returns the sentiment functions asyncfn serves by default:
//
//   - sentiment: per row an object shaped like AWS Comprehend's DetectSentiment answer,
//     {"Sentiment": "POSITIVE", "Positive": .., "Negative": .., "Neutral": .., "Mixed": ..},
//     derived from VADER's scores by the rule documented on ToComprehend;
//   - vader: per row VADER's own scores, {"compound": .., "pos": .., "neu": .., "neg": ..}.
//
// Both take one argument, the text. NULL gives NULL. Any other non-string argument fails
// the batch with a 400 naming the row: a number or an object is almost always a call on
// the wrong column, which a silent conversion would hide.
func Functions() []asyncfn.Function {
	a := Default()
	return []asyncfn.Function{
		{Name: "sentiment", Func: textFunc("sentiment", func(s string) any { return a.Comprehend(s) })},
		{Name: "vader", Func: textFunc("vader", func(s string) any { return a.PolarityScores(s) })},
	}
}

// textFunc adapts a function of one text to asyncfn.Func with the rules above.
func textFunc(name string, score func(string) any) asyncfn.Func {
	return asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
		out := make([]any, len(rows))
		for i, r := range rows {
			if len(r.Args) != 1 {
				return nil, asyncfn.InvalidInputf("%s takes 1 argument, the text, but row %d has %d.", name, r.Number, len(r.Args))
			}
			arg := r.Args[0]
			if string(arg) == "null" {
				continue
			}
			var text string
			if len(arg) == 0 || arg[0] != '"' || json.Unmarshal(arg, &text) != nil {
				return nil, asyncfn.InvalidInputf("%s takes a string, but row %d has %s; cast the column to VARCHAR.", name, r.Number, jsonKind(arg))
			}
			out[i] = score(text)
		}
		return out, nil
	})
}

func jsonKind(v json.RawMessage) string {
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	}
	return "a number"
}
