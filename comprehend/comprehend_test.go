package comprehend_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/comprehend"
	"github.com/asyncfn/asyncfn/comprehend/comprehendtest"
)

// score is how a row answers the fake's scores by default.
const score = comprehendtest.ScoreRow

// TestBatchesOf25ByLanguage: texts go 25 to a call, grouped by language (the second
// argument, any case, or the default for none or NULL); NULL and empty texts answer NULL
// without being sent; every other row gets its scores.
func TestBatchesOf25ByLanguage(t *testing.T) {
	t.Parallel()
	f := comprehendtest.New(t, nil)
	cfg := testConfig(f)
	cfg.Concurrency = 1 // the calls in order, to compare them
	fn := newFunction(t, cfg)

	var args []string
	var wantEN, wantES []string
	want := make([]string, 0, 64)
	for i := range 60 {
		switch {
		case i == 3:
			args = append(args, `null`)
			want = append(want, "null")
			continue
		case i == 4:
			args = append(args, `""`)
			want = append(want, "null")
			continue
		case i == 5:
			args = append(args, `null,"es"`)
			want = append(want, "null")
			continue
		case i%10 == 7:
			text := fmt.Sprintf("texto %d", i)
			args = append(args, fmt.Sprintf(`%q,%q`, text, []string{"es", "ES"}[i%2]))
			wantES = append(wantES, text)
		case i == 8:
			text := fmt.Sprintf("text %d", i)
			args = append(args, fmt.Sprintf(`%q,null`, text))
			wantEN = append(wantEN, text)
		default:
			text := fmt.Sprintf("text %d", i)
			args = append(args, fmt.Sprintf(`%q`, text))
			wantEN = append(wantEN, text)
		}
		want = append(want, score)
	}
	got, err := call(t, fn, rowsOf(args...))
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for i, w := range want {
		rows = append(rows, fmt.Sprintf("[%d,%s]", i, w))
	}
	if wantRows := `{"data":[` + strings.Join(rows, ",") + `]}`; got != wantRows {
		t.Errorf("rows\n%s\nwant\n%s", got, wantRows)
	}
	wantCalls := []comprehendtest.Request{
		req("en", wantEN[:25]...), req("en", wantEN[25:50]...), req("en", wantEN[50:]...),
		req("es", wantES...),
	}
	if sent := f.Requests(); !reflect.DeepEqual(sent, wantCalls) {
		t.Errorf("requests\n%q\nwant\n%q", sent, wantCalls)
	}
}

// TestAnswerShape: by default a row is the SentimentScore alone, as the sample returned
// it, with Comprehend's float32 scores in their exact digits; with Label the Sentiment
// label is added, the shape of the sentiment function's rows.
func TestAnswerShape(t *testing.T) {
	t.Parallel()
	f := comprehendtest.New(t, nil)
	got, err := call(t, newFunction(t, testConfig(f)), rowsOf(`"I love it"`))
	if want := `{"data":[[0,` + score + `]]}`; err != nil || got != want {
		t.Errorf("default: %s, %v; want %s", got, err, want)
	}
	cfg := testConfig(f)
	cfg.Label = true
	got, err = call(t, newFunction(t, cfg), rowsOf(`"I love it"`))
	if want := `{"data":[[0,{"Sentiment":"POSITIVE",` + score[1:] + `]]}`; err != nil || got != want {
		t.Errorf("with the label: %s, %v; want %s", got, err, want)
	}
}

// TestLongTexts: a text over 5,000 bytes is cut at the last character boundary within
// them, or fails the batch, or answers NULL without a call, as configured.
func TestLongTexts(t *testing.T) {
	t.Parallel()
	exact := strings.Repeat("a", 5000)
	splitsE := strings.Repeat("a", 4999) + "é" // 5,001 bytes: é would be cut in half
	euros := strings.Repeat("€", 2000)         // 6,000 bytes of 3-byte characters
	args := []string{fmt.Sprintf("%q", exact), fmt.Sprintf("%q", splitsE), fmt.Sprintf("%q", euros)}

	f := comprehendtest.New(t, nil)
	got, err := call(t, newFunction(t, testConfig(f)), rowsOf(args...))
	if want := `{"data":[[0,` + score + `],[1,` + score + `],[2,` + score + `]]}`; err != nil || got != want {
		t.Errorf("truncate: %s, %v", got, err)
	}
	wantSent := []comprehendtest.Request{req("en", exact, strings.Repeat("a", 4999), strings.Repeat("€", 1666))}
	if sent := f.Requests(); !reflect.DeepEqual(sent, wantSent) {
		t.Errorf("truncate sent %d requests, texts of %v bytes", len(sent), textBytes(sent))
	}

	f = comprehendtest.New(t, nil)
	cfg := testConfig(f)
	cfg.LongText = comprehend.Fail
	_, err = call(t, newFunction(t, cfg), rowsOf(args...))
	if e := asyncfn.AsError(err); err == nil || e.Kind != asyncfn.InvalidInput || e.Message != "row 1's text is 5001 bytes, over Amazon Comprehend's limit of 5000; shorten it in SQL (LEFT) or let asyncfn truncate it." {
		t.Errorf("fail: %v", err)
	}
	if n := len(f.Requests()); n != 0 {
		t.Errorf("fail: %d requests sent", n)
	}

	cfg.LongText = comprehend.Null
	got, err = call(t, newFunction(t, cfg), rowsOf(args...))
	if want := `{"data":[[0,` + score + `],[1,null],[2,null]]}`; err != nil || got != want {
		t.Errorf("null: %s, %v", got, err)
	}
	if sent := f.Requests(); !reflect.DeepEqual(sent, []comprehendtest.Request{req("en", exact)}) {
		t.Errorf("null sent texts of %v bytes", textBytes(sent))
	}
}

func textBytes(rs []comprehendtest.Request) [][]int {
	var out [][]int
	for _, r := range rs {
		var n []int
		for _, s := range r.TextList {
			n = append(n, len(s))
		}
		out = append(out, n)
	}
	return out
}

// TestThrottlingAnd5xxRetried: throttling (ThrottlingException, and Comprehend's own
// TooManyRequestsException) and 5xx answers are retried by the SDK with the same request,
// and the rows are answered once a retry succeeds.
func TestThrottlingAnd5xxRetried(t *testing.T) {
	t.Parallel()
	f := comprehendtest.New(t, func(n int, r comprehendtest.Request, _ *http.Request) comprehendtest.Reply {
		switch n {
		case 0:
			return comprehendtest.APIError(400, "ThrottlingException", "Rate exceeded")
		case 1:
			return comprehendtest.APIError(400, "TooManyRequestsException", "Rate exceeded")
		case 2:
			return comprehendtest.APIError(500, "InternalServerException", "Internal server error")
		case 3:
			return comprehendtest.Reply{Status: 503, Body: `{"message":"Service Unavailable"}`}
		}
		return comprehendtest.OK(r)
	})
	fn := newFunction(t, testConfig(f))
	got, err := call(t, fn, rowsOf(`"one"`, `"two"`))
	if want := `{"data":[[0,` + score + `],[1,` + score + `]]}`; err != nil || got != want {
		t.Fatalf("%s, %v", got, err)
	}
	sent := f.Requests()
	if len(sent) != 5 {
		t.Fatalf("%d requests, want 5", len(sent))
	}
	for _, r := range sent {
		if !reflect.DeepEqual(r, req("en", "one", "two")) {
			t.Errorf("request %q", r)
		}
	}
	want := map[string]float64{`asyncfn_comprehend_calls_total{outcome="ok"}`: 1, `asyncfn_comprehend_billed_units_total`: 3 + 3}
	if got := gather(t, fn); !reflect.DeepEqual(got, want) {
		t.Errorf("metrics %v", got)
	}
}

// TestRetriesRunOut: a call still throttled after MaxAttempts fails the attempt with a
// retryable error, so the batch is tried again later; a call refused for good (access
// denied) fails it.
func TestRetriesRunOut(t *testing.T) {
	t.Parallel()
	f := comprehendtest.New(t, func(int, comprehendtest.Request, *http.Request) comprehendtest.Reply {
		return comprehendtest.APIError(400, "ThrottlingException", "Rate exceeded")
	})
	cfg := testConfig(f)
	cfg.MaxAttempts = 3
	fn := newFunction(t, cfg)
	_, err := call(t, fn, rowsOf(`"one"`))
	if e := asyncfn.AsError(err); err == nil || e.Kind != asyncfn.Retryable ||
		e.Message != "Amazon Comprehend did not answer BatchDetectSentiment in 3 attempts; the last: 400 ThrottlingException Rate exceeded." {
		t.Errorf("%#v", err)
	}
	if n := len(f.Requests()); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}

	f = comprehendtest.New(t, func(int, comprehendtest.Request, *http.Request) comprehendtest.Reply {
		return comprehendtest.APIError(400, "AccessDeniedException", "User: arn:aws:sts::1:assumed-role/x is not authorized to perform: comprehend:BatchDetectSentiment")
	})
	_, err = call(t, newFunction(t, testConfig(f)), rowsOf(`"one"`))
	if e := asyncfn.AsError(err); err == nil || e.Kind != asyncfn.Internal ||
		e.Message != "Amazon Comprehend refused BatchDetectSentiment: 400 AccessDeniedException User: arn:aws:sts::1:assumed-role/x is not authorized to perform: comprehend:BatchDetectSentiment." {
		t.Errorf("%#v", err)
	}
	if n := len(f.Requests()); n != 1 {
		t.Errorf("access denied: %d requests, want 1", n)
	}
}

// TestErrorListRetriedAlone: a text in a call's ErrorList is sent once more alone; if
// that succeeds the batch does; if not, the batch fails naming the row, or the row is
// NULL, as configured.
func TestErrorListRetriedAlone(t *testing.T) {
	t.Parallel()
	texts := rowsOf(`"a"`, `"b"`, `"c"`)
	for _, tc := range []struct {
		name      string
		failAlone bool
		rowErrors string
		want      string
		wantErr   string
	}{
		{"succeeds alone", false, comprehend.Fail, `{"data":[[0,` + score + `],[1,` + score + `],[2,` + score + `]]}`, ""},
		{"fails alone, fail", true, comprehend.Fail, "", "Amazon Comprehend could not score row 1, also when sent alone: Internal server error (INTERNAL_SERVER_ERROR)."},
		{"fails alone, null", true, comprehend.Null, `{"data":[[0,` + score + `],[1,null],[2,` + score + `]]}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := comprehendtest.New(t, func(n int, r comprehendtest.Request, _ *http.Request) comprehendtest.Reply {
				if n == 0 || tc.failAlone {
					return comprehendtest.WithErrors(r, map[int]bool{1: n == 0, 0: n > 0})
				}
				return comprehendtest.OK(r)
			})
			cfg := testConfig(f)
			cfg.RowErrors = tc.rowErrors
			got, err := call(t, newFunction(t, cfg), texts)
			if tc.wantErr != "" {
				if e := asyncfn.AsError(err); err == nil || e.Kind != asyncfn.Internal || e.Message != tc.wantErr {
					t.Errorf("%#v", err)
				}
			} else if err != nil || got != tc.want {
				t.Errorf("%s, %v; want %s", got, err, tc.want)
			}
			want := []comprehendtest.Request{req("en", "a", "b", "c"), req("en", "b")}
			if sent := f.Requests(); !reflect.DeepEqual(sent, want) {
				t.Errorf("requests %q, want %q", sent, want)
			}
		})
	}
}

// TestBadInput: rows Comprehend cannot take fail the batch with a 400 naming the row,
// before any call.
func TestBadInput(t *testing.T) {
	t.Parallel()
	f := comprehendtest.New(t, func(n int, r comprehendtest.Request, _ *http.Request) comprehendtest.Reply {
		return comprehendtest.APIError(400, "UnsupportedLanguageException", "Amazon Comprehend can't process the language in the input text.")
	})
	fn := newFunction(t, testConfig(f))
	langs := "Amazon Comprehend detects sentiment in en, es, fr, de, it, pt, ar, hi, ja, ko, zh, zh-TW"
	for _, tc := range []struct{ args, want string }{
		{`"bonjour","xx"`, `row 1 asks for language "xx", which Amazon Comprehend has no sentiment model for; ` + langs + "."},
		{`42`, "comprehend takes the text as a string, but row 1's is not one; cast the column to VARCHAR."},
		{`"a","en","b"`, "comprehend takes 1 or 2 arguments, the text and optionally its language, but row 1 has 3."},
		{`"a",1`, "comprehend takes the language as a string such as 'en', but row 1's is not one."},
	} {
		_, err := call(t, fn, rowsOf(`"fine"`, tc.args))
		if e := asyncfn.AsError(err); err == nil || e.Kind != asyncfn.InvalidInput || e.Message != tc.want {
			t.Errorf("%s: %v\nwant %s", tc.args, err, tc.want)
		}
	}
	if n := len(f.Requests()); n != 0 {
		t.Errorf("%d requests sent for bad rows", n)
	}
	// A language Comprehend refuses although the SDK knows it.
	_, err := call(t, fn, rowsOf(`"नमस्ते","hi"`))
	if e := asyncfn.AsError(err); err == nil || e.Kind != asyncfn.InvalidInput ||
		e.Message != `Amazon Comprehend does not detect sentiment in language "hi" here: Amazon Comprehend can't process the language in the input text.` {
		t.Errorf("%#v", err)
	}
}

// TestConcurrentCalls: up to Concurrency calls of a batch are in flight at once, never
// more. The fake holds each request until three are in, so that with fewer in flight the
// test would fail rather than pass by chance.
func TestConcurrentCalls(t *testing.T) {
	t.Parallel()
	const concurrency = 3
	var mu sync.Mutex
	inFlight, most := 0, 0
	released := make(chan struct{})
	var releaseOnce sync.Once
	f := comprehendtest.New(t, func(n int, r comprehendtest.Request, h *http.Request) comprehendtest.Reply {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		if inFlight == concurrency {
			releaseOnce.Do(func() { close(released) })
		}
		mu.Unlock()
		defer func() { mu.Lock(); inFlight--; mu.Unlock() }()
		select {
		case <-released:
		case <-time.After(30 * time.Second):
			t.Errorf("only %d calls in flight at once", most)
		}
		return comprehendtest.OK(r)
	})
	cfg := testConfig(f)
	cfg.Concurrency = concurrency
	var args []string
	for i := range 6 * comprehend.MaxTexts {
		args = append(args, fmt.Sprintf(`"t%d"`, i))
	}
	if _, err := call(t, newFunction(t, cfg), rowsOf(args...)); err != nil {
		t.Fatal(err)
	}
	if n := len(f.Requests()); n != 6 {
		t.Errorf("%d calls, want 6", n)
	}
	if most != concurrency {
		t.Errorf("%d calls in flight at most, want %d", most, concurrency)
	}
}

// TestSlowAnswer: an attempt that gets no answer within CallTimeout is retried; a batch
// whose context ends while a call hangs returns at once with the context's error.
func TestSlowAnswer(t *testing.T) {
	t.Parallel()
	f := comprehendtest.New(t, func(n int, r comprehendtest.Request, h *http.Request) comprehendtest.Reply {
		if n == 0 {
			<-h.Context().Done() // until the client gives up
		}
		return comprehendtest.OK(r)
	})
	cfg := testConfig(f)
	cfg.CallTimeout = 200 * time.Millisecond
	got, err := call(t, newFunction(t, cfg), rowsOf(`"slow"`))
	if want := `{"data":[[0,` + score + `]]}`; err != nil || got != want {
		t.Errorf("%s, %v", got, err)
	}
	if n := len(f.Requests()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}

	f = comprehendtest.New(t, func(n int, r comprehendtest.Request, h *http.Request) comprehendtest.Reply {
		<-h.Context().Done()
		return comprehendtest.OK(r)
	})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err = newFunction(t, testConfig(f)).Call(ctx, rowsOf(`"hangs"`))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%v, want the context's deadline", err)
	}
}

// TestBilledUnits: each text scored is billed a unit per 100 characters (not bytes), at
// least 3; texts not sent cost nothing.
func TestBilledUnits(t *testing.T) {
	t.Parallel()
	f := comprehendtest.New(t, nil)
	fn := newFunction(t, testConfig(f))
	rows := rowsOf(`"a"`, `null`, fmt.Sprintf("%q", strings.Repeat("b", 300)), fmt.Sprintf("%q", strings.Repeat("c", 301)),
		fmt.Sprintf("%q", strings.Repeat("é", 1000)))
	if _, err := call(t, fn, rows); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		`asyncfn_comprehend_calls_total{outcome="ok"}`: 1,
		`asyncfn_comprehend_billed_units_total`:        3 + 3 + 4 + 10,
	}
	if got := gather(t, fn); !reflect.DeepEqual(got, want) {
		t.Errorf("metrics %v, want %v", got, want)
	}
}

// TestMalformedAnswer: an answer that does not account for every text sent, or names one
// that was not, fails the batch rather than leaving rows NULL or panicking.
func TestMalformedAnswer(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"a text missing":     `{"ResultList":[{"Index":0,"Sentiment":"POSITIVE","SentimentScore":` + comprehendtest.Score + `}],"ErrorList":[]}`,
		"index out of range": `{"ResultList":[{"Index":0,"Sentiment":"POSITIVE","SentimentScore":` + comprehendtest.Score + `}],"ErrorList":[{"Index":7,"ErrorCode":"X","ErrorMessage":"x"}]}`,
	} {
		f := comprehendtest.New(t, func(int, comprehendtest.Request, *http.Request) comprehendtest.Reply {
			return comprehendtest.Reply{Status: 200, Body: body}
		})
		_, err := call(t, newFunction(t, testConfig(f)), rowsOf(`"a"`, `"b"`))
		if e := asyncfn.AsError(err); err == nil || e.Kind != asyncfn.Internal || !strings.HasPrefix(e.Message, "Amazon Comprehend answered BatchDetectSentiment") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// BenchmarkCall scores a batch of 4,096 texts of 200 characters through the fake: the
// function's own cost per batch (planning, the SDK's encoding, signing and decoding).
func BenchmarkCall(b *testing.B) {
	f := comprehendtest.New(b, nil)
	fn := newFunction(b, testConfig(f))
	args := make([]string, 4096)
	for i := range args {
		args[i] = fmt.Sprintf("%q", strings.Repeat("x", 196)+fmt.Sprintf("%04d", i))
	}
	rows := rowsOf(args...)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fn.Call(context.Background(), rows); err != nil {
			b.Fatal(err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := comprehend.DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		change func(*comprehend.Config)
		want   string
	}{
		{func(c *comprehend.Config) { c.Language = "xx" }, `language "xx": Amazon Comprehend detects sentiment in en, es, fr, de, it, pt, ar, hi, ja, ko, zh, zh-TW`},
		{func(c *comprehend.Config) { c.Concurrency = 0 }, "concurrency 0: must be positive"},
		{func(c *comprehend.Config) { c.LongText = "cut" }, `long-text "cut": use truncate, fail or null`},
		{func(c *comprehend.Config) { c.RowErrors = "skip" }, `row-errors "skip": use fail or null`},
		{func(c *comprehend.Config) { c.MaxAttempts = -1 }, "max-attempts -1: must be positive"},
		{func(c *comprehend.Config) { c.MaxBackoff = 0 }, "max-backoff 0s: must be positive"},
		{func(c *comprehend.Config) { c.CallTimeout = 0 }, "call-timeout 0s: must be positive"},
	} {
		c := comprehend.DefaultConfig()
		tc.change(&c)
		var fe *comprehend.FieldError
		if err := c.Validate(); !errors.As(err, &fe) || err.Error() != tc.want {
			t.Errorf("%v, want %s", err, tc.want)
		}
	}
}

// gather returns the values of c's counters by name and labels, as /metrics shows them.
func gather(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += fmt.Sprintf("{%s=%q}", l.GetName(), l.GetValue())
			}
			out[name] = m.GetCounter().GetValue()
		}
	}
	return out
}

func req(language string, texts ...string) comprehendtest.Request {
	return comprehendtest.Request{LanguageCode: language, TextList: texts}
}

// TestLanguageHeader: the function's HEADERS = ('language' = '...') sets the language of
// rows that do not name one; a row's own language still wins; a language Comprehend has
// no model for fails the batch naming it.
func TestLanguageHeader(t *testing.T) {
	t.Parallel()
	f := comprehendtest.New(t, nil)
	fn := newFunction(t, testConfig(f))
	ctx := asyncfn.WithHeaders(t.Context(), map[string]string{"sf-custom-language": "ES"})
	if _, err := fn.Call(ctx, rowsOf(`"hola"`, `"hello","en"`)); err != nil {
		t.Fatal(err)
	}
	sent := f.Requests()
	sort.Slice(sent, func(i, j int) bool { return sent[i].LanguageCode < sent[j].LanguageCode })
	want := []comprehendtest.Request{{LanguageCode: "en", TextList: []string{"hello"}}, {LanguageCode: "es", TextList: []string{"hola"}}}
	if !reflect.DeepEqual(sent, want) {
		t.Errorf("requests %q, want %q", sent, want)
	}
	ctx = asyncfn.WithHeaders(t.Context(), map[string]string{"sf-custom-language": "xx"})
	_, err := fn.Call(ctx, rowsOf(`"hola"`))
	if e := asyncfn.AsError(err); err == nil || e.Kind != asyncfn.InvalidInput || !strings.Contains(e.Message, `"xx"`) {
		t.Errorf("Call with language header xx = %v, want an invalid-input error naming it", err)
	}
}
