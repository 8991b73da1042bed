package sentiment_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/sentiment"
)

func function(t *testing.T, name string) asyncfn.Func {
	t.Helper()
	for _, f := range sentiment.Functions() {
		if f.Name == name {
			return f.Func
		}
	}
	t.Fatalf("no function %q", name)
	return nil
}

func call(t *testing.T, name, body string) (string, error) {
	t.Helper()
	rows, err := asyncfn.ParseRows([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	out, err := function(t, name).Call(context.Background(), rows)
	if err != nil {
		return "", err
	}
	res, err := asyncfn.EncodeResult(rows, out)
	if err != nil {
		t.Fatal(err)
	}
	return string(res), nil
}

func TestSentimentShape(t *testing.T) {
	t.Parallel()
	got, err := call(t, "sentiment", `{"data":[[0,"hello world"],[1,"I am happy"],[2,null],[3,"I love the food but I hate the service"]]}`)
	if err != nil {
		t.Fatal(err)
	}
	var res struct{ Data [][2]json.RawMessage }
	if err := json.Unmarshal([]byte(got), &res); err != nil || len(res.Data) != 4 {
		t.Fatalf("result %s: %v", got, err)
	}
	want := []string{"NEUTRAL", "POSITIVE", "", "MIXED"}
	for i, row := range res.Data {
		if want[i] == "" {
			if string(row[1]) != "null" {
				t.Fatalf("row %d: NULL in gave %s", i, row[1])
			}
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal(row[1], &obj); err != nil {
			t.Fatal(err)
		}
		if len(obj) != 5 || obj["Sentiment"] != want[i] {
			t.Fatalf("row %d = %s; want 5 keys and Sentiment %s", i, row[1], want[i])
		}
		sum := 0.0
		for _, k := range []string{"Positive", "Negative", "Neutral", "Mixed"} {
			v, ok := obj[k].(float64)
			if !ok || v < 0 || v > 1 {
				t.Fatalf("row %d: %s = %v, want a number in [0,1]", i, k, obj[k])
			}
			sum += v
		}
		if sum < 1-1e-6 || sum > 1+1e-6 {
			t.Fatalf("row %d: scores sum to %v", i, sum)
		}
	}
}

func TestVaderShape(t *testing.T) {
	t.Parallel()
	got, err := call(t, "vader", `{"data":[[0,"I am happy"],[1,null]]}`)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"data":[[0,{"compound":0.5719,"pos":0.649,"neu":0.351,"neg":0}],[1,null]]}`; got != want {
		t.Fatalf("vader = %s, want %s", got, want)
	}
}

func TestBadArguments(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ body, want string }{
		{`{"data":[[0,"ok"],[1,42]]}`, "row 1 has a number"},
		{`{"data":[[0,{"a":1}]]}`, "row 0 has an object"},
		{`{"data":[[0,true]]}`, "row 0 has a boolean"},
		{`{"data":[[0,"a","b"]]}`, "takes 1 argument, the text, but row 0 has 2"},
		{`{"data":[[0]]}`, "takes 1 argument, the text, but row 0 has 0"},
	} {
		for _, name := range []string{"sentiment", "vader"} {
			_, err := call(t, name, tc.body)
			var e *asyncfn.Error
			if !errors.As(err, &e) || e.Kind != asyncfn.InvalidInput || !strings.Contains(e.Message, tc.want) {
				t.Errorf("%s(%s) error %v; want InvalidInput containing %q", name, tc.body, err, tc.want)
			}
		}
	}
}
