package upstream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/upstream"
)

// newRows returns a row function named "rows" calling url, quick to retry.
func newRows(t testing.TB, url string, adjust func(*upstream.RowConfig)) *upstream.RowFunction {
	t.Helper()
	f, err := upstream.NewRows(rowConfig(url, adjust), discard)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func rowConfig(url string, adjust func(*upstream.RowConfig)) upstream.RowConfig {
	cfg := upstream.DefaultRowConfig()
	cfg.Name, cfg.URL = "rows", url
	cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 10*time.Millisecond
	if adjust != nil {
		adjust(&cfg)
	}
	return cfg
}

// argRows returns one row per list of arguments (raw JSON), numbered from first.
func argRows(first int, args ...[]string) []asyncfn.Row {
	rows := make([]asyncfn.Row, len(args))
	for i, a := range args {
		rows[i].Number = first + i
		for _, v := range a {
			rows[i].Args = append(rows[i].Args, json.RawMessage(v))
		}
	}
	return rows
}

// seen is a request as the upstream received it.
type seen struct {
	Method, Path, Query string
	Header              http.Header
	Body                string
	At                  time.Time
}

// recorder serves handle and records the requests it gets, in order.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seen
}

func newRecorder(t *testing.T, handle func(n int, w http.ResponseWriter, r *http.Request)) *recorder {
	t.Helper()
	rec := &recorder{}
	rec.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), string(body), time.Now()})
		n := len(rec.reqs)
		rec.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		handle(n, w, r)
	}))
	t.Cleanup(rec.Close)
	return rec
}

func (rec *recorder) requests() []seen {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]seen(nil), rec.reqs...)
}

// echoBody answers the request's body.
func echoBody(_ int, w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	io.Copy(w, r.Body)
}

// raw returns the values as JSON text, NULL as <nil>.
func raw(t *testing.T, values []any) []string {
	t.Helper()
	out := make([]string, len(values))
	for i, v := range values {
		switch v := v.(type) {
		case nil:
			out[i] = "<nil>"
		case json.RawMessage:
			out[i] = string(v)
		default:
			t.Fatalf("value %d is a %T, not json.RawMessage nor nil", i, v)
		}
	}
	return out
}

// withRowDone returns ctx recording asyncfn.RowDone's values by row number.
func withRowDone(ctx context.Context) (context.Context, func() map[int]any) {
	var mu sync.Mutex
	done := map[int]any{}
	return asyncfn.WithRowDone(ctx, func(n int, v any) {
		mu.Lock()
		defer mu.Unlock()
		if _, dup := done[n]; dup {
			panic("row done twice")
		}
		done[n] = v
	}), func() map[int]any { mu.Lock(); defer mu.Unlock(); return done }
}

// TestRowTemplates: arguments with quotes, backslashes, unicode, line separators, NULL
// and numbers beyond float64 reach the URL, a header and a JSON body exactly, with the
// batch's custom headers; each row (any subset of a batch's numbers) gets its own
// request, its value is the answer's JSON, and asyncfn.RowDone gets each value as Call
// returns it.
func TestRowTemplates(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, echoBody)
	f := newRows(t, rec.URL+"/v1/{{urlpath (arg 0)}}?q={{urlquery (arg 0)}}&lang={{header \"language\"}}", func(c *upstream.RowConfig) {
		c.Headers = map[string]string{"X-Text": "{{arg 0}}", "X-Missing": `{{or (header "absent") "none"}}`}
		c.Body = `{"text": {{json (arg 0)}}, "n": {{json (arg 1)}}, "lang": {{json (header "language")}}, "args": {{json args}}}`
	})
	texts := []string{`"he said \"hi\" \\ o/"`, `"日本語 é 😀 \u2028 <&>"`, `null`, `"a/b?c=d&e f"`}
	nums := []string{`12345678901234567890.123456789012345`, `-0.000000000000000000001e-300`, `null`, `{"k":[1,"x"]}`}
	var args [][]string
	for i := range texts {
		args = append(args, []string{texts[i], nums[i]})
	}
	ctx, done := withRowDone(asyncfn.WithHeaders(context.Background(), map[string]string{"sf-custom-language": "fr"}))
	got, err := f.Call(ctx, argRows(7, args...))
	if err != nil {
		t.Fatal(err)
	}
	values := raw(t, got)
	reqs := rec.requests()
	if len(reqs) != len(texts) {
		t.Fatalf("%d requests, want %d", len(reqs), len(texts))
	}
	byText := map[string]seen{}
	for _, r := range reqs {
		byText[r.Header.Get("X-Text")] = r
	}
	for i, text := range texts {
		var s string
		json.Unmarshal([]byte(text), &s) // NULL is ""
		r, ok := byText[s]
		if !ok {
			t.Fatalf("no request with X-Text %q: %+v", s, reqs)
		}
		q, _ := url.ParseQuery(r.Query)
		if r.Method != "POST" || r.Path != "/v1/"+s || q.Get("q") != s || q.Get("lang") != "fr" || r.Header.Get("X-Missing") != "none" ||
			r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("row %d: %s %s?%s, headers %v", i, r.Method, r.Path, r.Query, r.Header)
		}
		want := `{"text": ` + text + `, "n": ` + nums[i] + `, "lang": "fr", "args": [` + text + `,` + nums[i] + `]}`
		if r.Body != want || values[i] != want {
			t.Errorf("row %d: body %s and value %s, want %s", i, r.Body, values[i], want)
		}
		if v, _ := done()[7+i].(json.RawMessage); string(v) != values[i] {
			t.Errorf("row %d: RowDone got %s, Call returned %s", 7+i, v, values[i])
		}
	}
	if len(done()) != len(texts) {
		t.Errorf("RowDone for %d rows, want %d", len(done()), len(texts))
	}
}

// TestRowErrorsBeforeSending: a template asking for a missing argument, a body that is
// not JSON, and a URL that is not one are the row's errors, named, and nothing is sent.
func TestRowErrorsBeforeSending(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, echoBody)
	for _, tt := range []struct {
		name       string
		url, body  string
		args       []string
		kind       asyncfn.ErrorKind
		want       string
		wantObject string
	}{
		{"missing argument", rec.URL, `{"a": {{json (arg 1)}}}`, []string{`"x"`}, asyncfn.InvalidInput,
			`row 4: body: arg 1 asks for argument 1 (counted from 0), but the row has 1.`, ""},
		{"invalid JSON body", rec.URL, `{"a": "{{arg 0}}"}`, []string{`"say \"hi\""`}, asyncfn.InvalidInput,
			`row 4: body: the template did not give valid JSON: {"a": "say "hi""}; write an argument as {{json (arg 0)}}, not in quotes.`, ""},
		{"not a URL", "{{arg 0}}", "", []string{`"ftp://example.com/x"`}, asyncfn.InvalidInput,
			`row 4: url: "ftp://example.com/x" is not an http or https URL with a host.`, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newRows(t, tt.url, func(c *upstream.RowConfig) { c.Body = tt.body })
			_, err := f.Call(context.Background(), argRows(4, tt.args))
			if e := asyncfn.AsError(err); e.Kind != tt.kind || e.Message != tt.want {
				t.Errorf("error %v (%s), want %s: %s", err, e.Kind, tt.kind, tt.want)
			}
			// With on-error: error, the same reason becomes the row's value.
			f = newRows(t, tt.url, func(c *upstream.RowConfig) { c.Body, c.OnError = tt.body, upstream.OnErrorError })
			got, err := f.Call(context.Background(), argRows(4, tt.args))
			if err != nil {
				t.Fatal(err)
			}
			var obj map[string]any
			if json.Unmarshal(got[0].(json.RawMessage), &obj); obj["error"] != strings.TrimSuffix(strings.TrimPrefix(tt.want, "row 4: "), ".") || len(obj) != 1 {
				t.Errorf("value %s, want the error alone", got[0])
			}
		})
	}
	if n := len(rec.requests()); n != 0 {
		t.Errorf("%d requests sent, want none", n)
	}
}

// TestRowSecrets: a secret goes only to a host it is pinned to, port included; a
// request that would carry it elsewhere is refused, naming the secret and the host, and
// the other host gets nothing. A host pinned without a port is https on 443 only. The
// secret's value is never in a message, a value, the log or the metrics, even when the
// upstream quotes it back.
func TestRowSecrets(t *testing.T) {
	t.Parallel()
	const key = "sk-TOP/SECRET+key"
	pinned := newRecorder(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/echo-key" { // an upstream that quotes the key back in its error
			http.Error(w, "bad key "+r.Header.Get("Authorization")+" for "+r.URL.Query().Get("k"), http.StatusUnauthorized)
			return
		}
		w.Write([]byte(`{"ok":true}`))
	})
	unpinned := newRecorder(t, echoBody)
	pinnedHost, unpinnedHost := pinned.Listener.Addr().String(), unpinned.Listener.Addr().String()
	var logs bytes.Buffer
	cfg := rowConfig("{{arg 0}}?k={{urlquery (secret \"openai\")}}", func(c *upstream.RowConfig) {
		c.Headers = map[string]string{"Authorization": `Bearer {{secret "openai"}}`}
		c.Secrets = map[string]upstream.Secret{"openai": {Value: key, Hosts: []string{"api.openai.com", pinnedHost}}}
		c.OnError = upstream.OnErrorError
	})
	f, err := upstream.NewRows(cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.Call(context.Background(), argRows(0,
		[]string{`"` + pinned.URL + `/ok"`},
		[]string{`"` + unpinned.URL + `/steal"`},
		[]string{`"` + pinned.URL + `/echo-key"`},
	))
	if err != nil {
		t.Fatal(err)
	}
	values := raw(t, got)
	want := []string{
		`{"ok":true}`,
		`{"error":"the request was not sent, as the secret openai may not be sent to ` + unpinnedHost + ` (only to api.openai.com, ` + pinnedHost + `)"}`,
		`{"error":"the upstream ` + pinned.URL + `/echo-key answered 401 Unauthorized: bad key Bearer [secret openai] for [secret openai]","status":401}`,
	}
	for i := range want {
		if values[i] != want[i] {
			t.Errorf("row %d: %s, want %s", i, values[i], want[i])
		}
	}
	if n := len(unpinned.requests()); n != 0 {
		t.Errorf("the unpinned host got %d requests, want none", n)
	}
	for _, r := range pinned.requests() {
		if r.Header.Get("Authorization") != "Bearer "+key {
			t.Errorf("the pinned host got Authorization %q", r.Header.Get("Authorization"))
		}
	}

	// The same through "fail", and a host pinned without a port, which is not http.
	for _, hosts := range [][]string{{pinnedHost}, {"127.0.0.1"}} {
		cfg := cfg
		cfg.OnError = upstream.OnErrorFail
		cfg.Secrets = map[string]upstream.Secret{"openai": {Value: key, Hosts: hosts}}
		f, err := upstream.NewRows(cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
		if err != nil {
			t.Fatal(err)
		}
		rows := argRows(0, []string{`"` + pinned.URL + `/ok"`}, []string{`"` + unpinned.URL + `/steal"`})
		if hosts[0] != pinnedHost {
			rows = rows[:1]
		}
		_, err = f.Call(context.Background(), rows)
		if hosts[0] == pinnedHost {
			want := `row 1: the request was not sent, as the secret openai may not be sent to ` + unpinnedHost + ` (only to ` + pinnedHost + `).`
			if e := asyncfn.AsError(err); e.Kind != asyncfn.InvalidInput || e.Message != want {
				t.Errorf("error %v, want %s", err, want)
			}
		} else if err == nil || !strings.Contains(err.Error(), "may not be sent to "+pinnedHost+" (only to 127.0.0.1)") {
			t.Errorf("error %v, want the row refused: 127.0.0.1 alone is https on 443", err)
		}
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(f)
		families, _ := reg.Gather()
		for _, mf := range families {
			if strings.Contains(mf.String(), "TOP") {
				t.Errorf("the metrics show the secret: %s", mf)
			}
		}
		if err != nil && strings.Contains(err.Error(), "TOP") {
			t.Errorf("the error shows the secret: %v", err)
		}
	}
	if n := len(unpinned.requests()); n != 0 {
		t.Errorf("the unpinned host got %d requests, want none", n)
	}
	if strings.Contains(logs.String(), "TOP") || strings.Contains(logs.String(), url.QueryEscape(key)) {
		t.Errorf("the log shows the secret:\n%s", logs.String())
	}
}

// TestRowResult: the result path picks a part of the answer by keys and indexes; a path
// not in the answer is the row's error, with the answer quoted.
func TestRowResult(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"choices": [{"message": {"content": "bonjour", "n": 1.50}}], "usage": null}`))
	})
	for _, tt := range []struct{ path, want string }{
		{"", `{"choices": [{"message": {"content": "bonjour", "n": 1.50}}], "usage": null}`},
		{"choices.0.message.content", `"bonjour"`},
		{"choices.0.message", `{"content": "bonjour", "n": 1.50}`},
		{"choices.0.message.n", `1.50`},
		{"usage", `null`},
		{"choices.1.message", `{"error":"the upstream ` + rec.URL + ` answered 200 OK without choices.1.message: choices has no 1: {\"choices\": [{\"message\": {\"content\": \"bonjour\", \"n\": 1.50}}], \"usage\": null}","status":200}`},
		{"usage.tokens", `{"error":"the upstream ` + rec.URL + ` answered 200 OK without usage.tokens: usage has no tokens: {\"choices\": [{\"message\": {\"content\": \"bonjour\", \"n\": 1.50}}], \"usage\": null}","status":200}`},
		{"model", `{"error":"the upstream ` + rec.URL + ` answered 200 OK without model: the answer has no model: {\"choices\": [{\"message\": {\"content\": \"bonjour\", \"n\": 1.50}}], \"usage\": null}","status":200}`},
	} {
		f := newRows(t, rec.URL, func(c *upstream.RowConfig) { c.Result, c.OnError = tt.path, upstream.OnErrorError })
		got, err := f.Call(context.Background(), argRows(0, nil))
		if err != nil {
			t.Fatal(err)
		}
		if v := raw(t, got)[0]; v != tt.want {
			t.Errorf("result %q: %s, want %s", tt.path, v, tt.want)
		}
	}
}

// TestRowOnError: a 4xx other than 429 is not sent again, and fails the batch naming the
// row, or makes the row NULL, or an error object with the status, as on-error says; the
// other rows keep their values.
func TestRowOnError(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("x") == "missing" {
			http.Error(w, "no such thing", http.StatusNotFound)
			return
		}
		w.Write([]byte(`"found"`))
	})
	rows := argRows(10, []string{`"a"`}, []string{`"missing"`}, []string{`"b"`})
	for _, tt := range []struct {
		onError string
		want    string
	}{
		{upstream.OnErrorFail, "row 11: the upstream " + rec.URL + " answered 404 Not Found: no such thing."},
		{upstream.OnErrorNull, `"found" <nil> "found"`},
		{upstream.OnErrorError, `"found" {"error":"the upstream ` + rec.URL + ` answered 404 Not Found: no such thing","status":404} "found"`},
	} {
		f := newRows(t, rec.URL+"?x={{arg 0}}", func(c *upstream.RowConfig) { c.OnError, c.Concurrency = tt.onError, 1 })
		ctx, done := withRowDone(context.Background())
		got, err := f.Call(ctx, rows)
		if tt.onError == upstream.OnErrorFail {
			if e := asyncfn.AsError(err); e.Kind != asyncfn.InvalidInput || e.Message != tt.want {
				t.Errorf("fail: error %v (%s), want %s", err, e.Kind, tt.want)
			}
			if _, ok := done()[10]; !ok || len(done()) != 1 {
				t.Errorf("fail: RowDone for %v, want row 10 alone (the one before)", done())
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if v := strings.Join(raw(t, got), " "); v != tt.want {
			t.Errorf("%s: %s, want %s", tt.onError, v, tt.want)
		}
		if len(done()) != 3 || done()[11] == nil != (tt.onError == upstream.OnErrorNull) {
			t.Errorf("%s: RowDone for %v, want all three", tt.onError, done())
		}
	}
	if n := len(rec.requests()); n != 3+3+2 {
		t.Errorf("%d requests, want 8: none sent again, none after the failed row with fail", n)
	}
}

// TestRowRetryAfter: under a rate limit, a 429's Retry-After of 1s is waited out before
// its row is sent again, the other rows go on at the rate meanwhile, and the waits are
// in the metrics.
func TestRowRetryAfter(t *testing.T) {
	t.Parallel()
	var throttled atomic.Bool
	rec := newRecorder(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("x") == "1" && throttled.CompareAndSwap(false, true) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		w.Write([]byte(`"ok"`))
	})
	f := newRows(t, rec.URL+"?x={{arg 0}}", func(c *upstream.RowConfig) { c.Rate, c.Burst = 20, 1 })
	start := time.Now()
	got, err := f.Call(context.Background(), argRows(0, []string{`0`}, []string{`1`}, []string{`2`}, []string{`3`}))
	if err != nil {
		t.Fatal(err)
	}
	if v := strings.Join(raw(t, got), " "); v != `"ok" "ok" "ok" "ok"` {
		t.Fatalf("values %s", v)
	}
	reqs := rec.requests()
	if len(reqs) != 5 {
		t.Fatalf("%d requests, want 5 (one resent)", len(reqs))
	}
	var first, again time.Time
	for _, r := range reqs {
		if r.Query == "x=1" {
			if first.IsZero() {
				first = r.At
			} else {
				again = r.At
			}
		}
	}
	if gap := again.Sub(first); gap < time.Second {
		t.Errorf("sent again after %v, before the Retry-After of 1s", gap)
	}
	if reqs[len(reqs)-1].Query != "x=1" {
		t.Errorf("the last request is %s, want the throttled row's, the others not held up", reqs[len(reqs)-1].Query)
	}
	for i := 1; i < len(reqs); i++ {
		if gap := reqs[i].At.Sub(reqs[i-1].At); gap < 40*time.Millisecond {
			t.Errorf("requests %d and %d %v apart, under the rate of 20/s", i-1, i, gap)
		}
	}
	m := gather(t, f)
	if m["asyncfn_upstream_rate_wait_seconds_total function=rows"] < 0.1 || m["asyncfn_upstream_backoff_seconds_total function=rows"] < 0.9 ||
		m["asyncfn_upstream_retries_total function=rows"] != 1 || m["asyncfn_upstream_requests_total class=4xx function=rows"] != 1 ||
		m["asyncfn_upstream_requests_total class=2xx function=rows"] != 4 || m["asyncfn_upstream_request_duration_seconds function=rows"] != 5 {
		t.Errorf("metrics %v", m)
	}
	if time.Since(start) > 3*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
}

// gather returns the functions' metrics by name and labels: counters' values and
// histograms' counts.
func gather(t *testing.T, cs ...prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(cs...)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				got[key] = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				got[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return got
}

// TestRowTransient: a 500 is sent again and its row answered; a row that keeps failing
// gives the batch back to the queue (retryable) naming the row, and the rows answered
// before it were reported with RowDone, for the next attempt to skip.
func TestRowTransient(t *testing.T) {
	t.Parallel()
	var once atomic.Bool
	rec := newRecorder(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		switch x := r.URL.Query().Get("x"); {
		case x == "flaky" && once.CompareAndSwap(false, true):
			http.Error(w, "oops", http.StatusInternalServerError)
		case x == "down":
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
		default:
			w.Write([]byte(`"` + x + `"`))
		}
	})
	f := newRows(t, rec.URL+"?x={{arg 0}}", func(c *upstream.RowConfig) { c.Concurrency, c.OnError = 1, upstream.OnErrorNull })
	ctx, done := withRowDone(context.Background())
	got, err := f.Call(ctx, argRows(0, []string{`"a"`}, []string{`"flaky"`}))
	if v := strings.Join(raw(t, got), " "); err != nil || v != `"a" "flaky"` {
		t.Fatalf("values %s, error %v", v, err)
	}
	if len(rec.requests()) != 3 || len(done()) != 2 {
		t.Errorf("%d requests and %d rows done, want 3 and 2", len(rec.requests()), len(done()))
	}
	ctx, done = withRowDone(context.Background())
	_, err = f.Call(ctx, argRows(5, []string{`"a"`}, []string{`"b"`}, []string{`"down"`}, []string{`"c"`}))
	want := "row 7: the upstream " + rec.URL + " answered 503 Service Unavailable: overloaded, 3 times in a row."
	if e := asyncfn.AsError(err); e.Kind != asyncfn.Retryable || e.Message != want {
		t.Errorf("error %v (%s), want retryable: %s", err, e.Kind, want)
	}
	if d := done(); len(d) != 2 || string(d[5].(json.RawMessage)) != `"a"` || string(d[6].(json.RawMessage)) != `"b"` {
		t.Errorf("RowDone for %v, want rows 5 and 6", d)
	}
}

// TestRowRequestTimeout: a request the upstream never answers is cut by the request
// timeout and sent again; one that times out on every attempt gives the batch back.
func TestRowRequestTimeout(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 || r.URL.Query().Get("x") == "hang" {
			<-r.Context().Done()
			return
		}
		w.Write([]byte(`"ok"`))
	})
	f := newRows(t, rec.URL+"?x={{arg 0}}", func(c *upstream.RowConfig) { c.RequestTimeout = 100 * time.Millisecond })
	start := time.Now()
	got, err := f.Call(context.Background(), argRows(0, []string{`"a"`}))
	if v := strings.Join(raw(t, got), " "); err != nil || v != `"ok"` {
		t.Fatalf("values %s, error %v", v, err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
		t.Errorf("took %v, want the request timeout of 100ms and a little", d)
	}
	_, err = f.Call(context.Background(), argRows(0, []string{`"hang"`}))
	want := "row 0: the upstream " + rec.URL + " gave no answer within 100ms, the request timeout, 3 times in a row."
	if e := asyncfn.AsError(err); e.Kind != asyncfn.Retryable || e.Message != want {
		t.Errorf("error %v (%s), want retryable: %s", err, e.Kind, want)
	}
}

// TestRowConcurrency: two batches at once share the function's cap on requests in
// flight, which the upstream sees reached and never passed.
func TestRowConcurrency(t *testing.T) {
	t.Parallel()
	var inFlight, most atomic.Int32
	rec := newRecorder(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		w.Write([]byte(`1`))
	})
	f := newRows(t, rec.URL, func(c *upstream.RowConfig) { c.Concurrency = 3 })
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			rows := make([][]string, 15)
			if _, err := f.Call(context.Background(), argRows(0, rows...)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if most.Load() != 3 || len(rec.requests()) != 30 {
		t.Errorf("at most %d in flight over %d requests, want 3 over 30", most.Load(), len(rec.requests()))
	}
}

// TestRowTimeout: a batch that outlasts the function's timeout fails saying how many
// rows were answered, and what to change.
func TestRowTimeout(t *testing.T) {
	t.Parallel()
	rec := newRecorder(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n > 2 {
			<-r.Context().Done()
			return
		}
		w.Write([]byte(`1`))
	})
	f := newRows(t, rec.URL, func(c *upstream.RowConfig) { c.Concurrency, c.Timeout = 1, 300*time.Millisecond })
	_, err := f.Call(context.Background(), argRows(0, nil, nil, nil, nil))
	want := "the function answered 2 of 4 rows within 300ms, its timeout; raise its timeout or rate, or lower MAX_BATCH_ROWS."
	if e := asyncfn.AsError(err); e.Kind != asyncfn.Internal || e.Message != want {
		t.Errorf("error %v (%s), want %s", err, e.Kind, want)
	}
	if fn := f.Function(); fn.Timeout != 300*time.Millisecond+time.Second || fn.Name != "rows" {
		t.Errorf("Function() = %s with timeout %v", fn.Name, fn.Timeout)
	}
}

// TestRowConfig: the defaults are valid once Name and URL are set; each bad field is
// named as in YAML, templates are parsed, and a secret's value is never shown.
func TestRowConfig(t *testing.T) {
	t.Parallel()
	good := rowConfig("https://api.example/v1/{{urlpath (arg 0)}}", func(c *upstream.RowConfig) {
		c.Secrets = map[string]upstream.Secret{"k": {Value: "secret-value", Hosts: []string{"api.example", "10.0.0.1:8443", "[::1]:8080"}}}
		c.Headers = map[string]string{"Authorization": `Bearer {{secret "k"}}`}
	})
	if err := good.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tt := range []struct {
		field  string
		adjust func(*upstream.RowConfig)
	}{
		{"name", func(c *upstream.RowConfig) { c.Name = "" }},
		{"url", func(c *upstream.RowConfig) { c.URL = "" }},
		{"url", func(c *upstream.RowConfig) { c.URL = "https://x/{{arg 0" }},
		{"url", func(c *upstream.RowConfig) { c.URL = "https://x/{{nosuch 0}}" }},
		{"url", func(c *upstream.RowConfig) { c.URL = `https://x/{{secret "other"}}` }},
		{"body", func(c *upstream.RowConfig) { c.Body = `{{secret (arg 0)}}` }},
		{"body", func(c *upstream.RowConfig) { c.Body = `{{define "url"}}https://elsewhere{{end}}` }},
		{"method", func(c *upstream.RowConfig) { c.Method = "" }},
		{"headers", func(c *upstream.RowConfig) { c.Headers = map[string]string{"bad name": "x"} }},
		{"headers", func(c *upstream.RowConfig) { c.Headers = map[string]string{"Host": "x"} }},
		{"headers", func(c *upstream.RowConfig) { c.Headers = map[string]string{"X": `{{"k" | secret}}`} }},
		{"secrets", func(c *upstream.RowConfig) { c.Secrets["k"] = upstream.Secret{Value: "secret-value"} }},
		{"secrets", func(c *upstream.RowConfig) {
			c.Secrets["k"] = upstream.Secret{Value: "secret-value", Hosts: []string{"https://api.example"}}
		}},
		{"secrets", func(c *upstream.RowConfig) { c.Secrets["k"] = upstream.Secret{Hosts: []string{"a"}} }},
		{"result", func(c *upstream.RowConfig) { c.Result = "choices..content" }},
		{"on-error", func(c *upstream.RowConfig) { c.OnError = "ignore" }},
		{"concurrency", func(c *upstream.RowConfig) { c.Concurrency = 0 }},
		{"rate", func(c *upstream.RowConfig) { c.Rate = -1 }},
		{"burst", func(c *upstream.RowConfig) { c.Burst = -1 }},
		{"request-attempts", func(c *upstream.RowConfig) { c.RequestAttempts = 0 }},
		{"min-backoff", func(c *upstream.RowConfig) { c.MinBackoff = 0 }},
		{"max-backoff", func(c *upstream.RowConfig) { c.MaxBackoff = time.Microsecond }},
		{"request-timeout", func(c *upstream.RowConfig) { c.RequestTimeout = 0 }},
		{"timeout", func(c *upstream.RowConfig) { c.Timeout = 0 }},
	} {
		cfg := good
		cfg.Secrets = map[string]upstream.Secret{"k": good.Secrets["k"]}
		tt.adjust(&cfg)
		_, err := upstream.NewRows(cfg, discard)
		var fe *upstream.FieldError
		if !errors.As(err, &fe) || fe.Field != tt.field || strings.Contains(err.Error(), "secret-value") {
			t.Errorf("%s: error %v, want one naming field %s without the secret", tt.field, err, tt.field)
		}
	}
}
