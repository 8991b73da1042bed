package upstream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/upstream"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// newFunction returns the function of an upstream at url, quick to retry and poll.
func newFunction(t testing.TB, url string, adjust func(*upstream.Config)) *upstream.Function {
	t.Helper()
	cfg := upstream.DefaultConfig()
	cfg.Name, cfg.URL = "up", url
	cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 10*time.Millisecond
	cfg.PollMin, cfg.PollMax = time.Millisecond, 10*time.Millisecond
	if adjust != nil {
		adjust(&cfg)
	}
	f, err := upstream.New(cfg, discard)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// rowsOf returns one row per argument, as the front end parses them.
func rowsOf(args ...string) []asyncfn.Row {
	rows := make([]asyncfn.Row, len(args))
	for i, a := range args {
		rows[i] = asyncfn.Row{Number: i, Args: []json.RawMessage{json.RawMessage(a)}}
	}
	return rows
}

// echo answers each row's first argument, as a well-behaved upstream.
func echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rows, err := asyncfn.ParseRows(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	values, _ := asyncfn.Echo.Call(r.Context(), rows)
	answer, err := asyncfn.EncodeResult(rows, values)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(answer)
}

// server serves handle, which gets the number of the request (1 for the first) and its
// body read already, so that the request's context ends when the client goes.
func server(t *testing.T, handle func(n int, w http.ResponseWriter, r *http.Request)) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		handle(int(n.Add(1)), w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func values(t *testing.T, got []any) string {
	t.Helper()
	var b strings.Builder
	for _, v := range got {
		raw, ok := v.(json.RawMessage)
		if !ok {
			t.Fatalf("value %#v is not a json.RawMessage", v)
		}
		b.Write(raw)
		b.WriteByte(' ')
	}
	return strings.TrimSpace(b.String())
}

// TestEcho: the rows go to the upstream in Snowflake's format and its values come back
// in row order; the batch's custom and context headers and Config.Headers go with them,
// its trace context does not; the batch id is the same for the same batch and another
// for other rows; one connection serves every batch.
func TestEcho(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen []http.Header
	var bodies []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen, bodies = append(seen, r.Header.Clone()), append(bodies, string(body))
		mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		echo(w, r)
	}))
	var conns atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	f := newFunction(t, srv.URL+"/fn?token=secret", func(c *upstream.Config) {
		c.Headers = map[string]string{"sf-custom-api-key": "k-123", "X-Extra": "yes"}
	})
	ctx := asyncfn.WithHeaders(context.Background(), map[string]string{
		"sf-custom-language": "fr", "sf-context-current_user": "ALICE", "sf-context-current_user-base64": "QUxJQ0U=",
		"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	})
	for _, args := range [][]string{{`"a"`, `{"b":[1,2]}`, `null`, `12345678901234567890`}, {`"a"`, `{"b":[1,2]}`, `null`, `12345678901234567890`}, {`"other"`}} {
		got, err := f.Call(ctx, rowsOf(args...))
		if err != nil {
			t.Fatal(err)
		}
		if values(t, got) != strings.Join(args, " ") {
			t.Fatalf("values %s, want %s", values(t, got), strings.Join(args, " "))
		}
	}
	if want := `{"data":[[0,"a"],[1,{"b":[1,2]}],[2,null],[3,12345678901234567890]]}`; bodies[0] != want {
		t.Errorf("body %s, want %s", bodies[0], want)
	}
	h := seen[0]
	for name, want := range map[string]string{
		"Content-Type": "application/json", asyncfn.HeaderFormat: "json", asyncfn.HeaderFormatVersion: "1.0",
		"sf-custom-language": "fr", "sf-context-current_user": "ALICE", "sf-context-current_user-base64": "QUxJQ0U=",
		"sf-custom-api-key": "k-123", "X-Extra": "yes", "traceparent": "",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("header %s = %q, want %q", name, got, want)
		}
	}
	id := h.Get(asyncfn.HeaderBatchID)
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) {
		t.Errorf("batch id %q, want 32 hex digits", id)
	}
	if again := seen[1].Get(asyncfn.HeaderBatchID); again != id {
		t.Errorf("batch id of the same batch again %q, want %q", again, id)
	}
	if other := seen[2].Get(asyncfn.HeaderBatchID); other == id {
		t.Errorf("batch id of other rows %q, the same as the first batch's", other)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 3 batches one after the other, want 1", n)
	}
}

// TestMisbehaving: each way an upstream can misbehave gives the batch's error the kind
// (so the status the SQL user gets) and a message that says what the upstream did.
func TestMisbehaving(t *testing.T) {
	t.Parallel()
	answer := func(status int, body string) func(int, http.ResponseWriter, *http.Request) {
		return func(_ int, w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(status)
			io.WriteString(w, body)
		}
	}
	for _, tt := range []struct {
		name   string
		handle func(n int, w http.ResponseWriter, r *http.Request)
		kind   asyncfn.ErrorKind // "" for success
		msg    string
		sent   int // requests the upstream got
	}{
		{"500 then success", func(n int, w http.ResponseWriter, r *http.Request) {
			if n == 1 {
				http.Error(w, "oops", http.StatusInternalServerError)
				return
			}
			echo(w, r)
		}, "", "", 2},
		{"connection dropped then success", func(n int, w http.ResponseWriter, r *http.Request) {
			if n == 1 {
				conn, _, _ := w.(http.Hijacker).Hijack()
				conn.Close()
				return
			}
			echo(w, r)
		}, "", "", 2},
		{"5xx until the attempts run out", answer(http.StatusBadGateway, "busy\n"),
			asyncfn.Retryable, ` answered 502 Bad Gateway: busy, 3 times in a row.`, 3},
		{"malformed JSON", answer(http.StatusOK, `{"data":[[0,"a"],[1,"b"]`),
			asyncfn.Internal, ` sent a bad answer: the answer is not valid JSON (unexpected end of JSON input): {"data":[[0,"a"],[1,"b"].`, 1},
		{"wrong row count", answer(http.StatusOK, `{"data":[[0,"a"]]}`),
			asyncfn.Internal, ` sent a bad answer: 2 rows were sent, 1 came back.`, 1},
		{"rows out of order", answer(http.StatusOK, `{"data":[[1,"b"],[0,"a"]]}`),
			asyncfn.Internal, ` sent a bad answer: row 0 of the answer is numbered 1.`, 1},
		{"no data", answer(http.StatusOK, `{"rows":[]}`),
			asyncfn.Internal, ` sent a bad answer: the answer has no "data" array.`, 1},
		{"over 10 MB", answer(http.StatusOK, `{"data":[[0,"`+strings.Repeat("x", 10<<20)+`"],[1,null]]}`),
			asyncfn.Internal, ` sent a bad answer: the answer is over 10485760 bytes.`, 1},
		{"400", answer(http.StatusBadRequest, "row 1: not a number"),
			asyncfn.InvalidInput, ` rejected the rows: 400 Bad Request: row 1: not a number.`, 1},
		{"400 with a sentence", answer(http.StatusBadRequest, "Row 1 is not a number.\n"),
			asyncfn.InvalidInput, ` rejected the rows: 400 Bad Request: Row 1 is not a number.`, 1},
		{"an error page", answer(http.StatusBadRequest, "<html>\n  <h1>Bad\xffrow</h1>\n</html>\n"),
			asyncfn.InvalidInput, " rejected the rows: 400 Bad Request: <html> <h1>Bad\uFFFDrow</h1> </html>.", 1},
		{"404", answer(http.StatusNotFound, "no such function"),
			asyncfn.Internal, ` answered 404 Not Found to a POST: no such function.`, 1},
		{"redirect", func(_ int, w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		},
			asyncfn.Internal, ` answered 302 Found to a POST.`, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, sent := server(t, tt.handle)
			f := newFunction(t, srv.URL+"/fn?token=secret", nil) // named without its query
			got, err := f.Call(context.Background(), rowsOf(`"a"`, `"b"`))
			switch {
			case tt.kind == "" && err != nil:
				t.Fatalf("error %v, want the rows", err)
			case tt.kind == "" && values(t, got) != `"a" "b"`:
				t.Fatalf("values %s", values(t, got))
			case tt.kind != "":
				e := asyncfn.AsError(err)
				if want := "the upstream " + srv.URL + "/fn" + tt.msg; e.Kind != tt.kind || e.Message != want {
					t.Fatalf("error %s %q,\nwant  %s %q", e.Kind, e.Message, tt.kind, want)
				}
			}
			if n := int(sent.Load()); n != tt.sent {
				t.Errorf("the upstream got %d requests, want %d", n, tt.sent)
			}
		})
	}
}

// TestRetryAfter: a 429 or 503 is sent again no sooner than its Retry-After asks, not
// after the (much shorter) backoff; a Retry-After longer than the attempt has left
// gives the batch back to the queue at once.
func TestRetryAfter(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			t.Parallel()
			var first time.Time
			var gap time.Duration
			srv, _ := server(t, func(n int, w http.ResponseWriter, r *http.Request) {
				if n == 1 {
					first = time.Now()
					w.Header().Set("Retry-After", "1")
					http.Error(w, "slow down", status)
					return
				}
				gap = time.Since(first)
				echo(w, r)
			})
			f := newFunction(t, srv.URL, nil)
			if _, err := f.Call(context.Background(), rowsOf(`1`)); err != nil {
				t.Fatal(err)
			}
			if gap < time.Second {
				t.Fatalf("sent again after %v, before the Retry-After of 1s", gap)
			}
		})
	}
	t.Run("past the timeout", func(t *testing.T) {
		t.Parallel()
		srv, sent := server(t, func(_ int, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "3600")
			http.Error(w, "come back in an hour", http.StatusTooManyRequests)
		})
		f := newFunction(t, srv.URL, func(c *upstream.Config) { c.Timeout = time.Minute })
		_, err := f.Call(context.Background(), rowsOf(`1`))
		e := asyncfn.AsError(err)
		want := "the upstream " + srv.URL + " answered 429 Too Many Requests: come back in an hour, and the wait before asking again is longer than the attempt has left."
		if e.Kind != asyncfn.Retryable || e.Message != want || sent.Load() != 1 {
			t.Fatalf("error %s %q after %d requests,\nwant  retryable %q after 1", e.Kind, e.Message, sent.Load(), want)
		}
	})
}

// TestPolled: an upstream that answers 202 is polled with GET, without a body and with
// the POST's headers, until its final answer.
func TestPolled(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var methods, ids []string
	var posted []byte
	srv, _ := server(t, func(n int, w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		methods, ids = append(methods, r.Method+" "+strconv.Itoa(len(body))), append(ids, r.Header.Get(asyncfn.HeaderBatchID))
		if n == 1 {
			posted = body
		}
		mu.Unlock()
		if n < 4 {
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, "{}")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(posted))
		echo(w, r)
	})
	f := newFunction(t, srv.URL, nil)
	got, err := f.Call(context.Background(), rowsOf(`"x"`, `"y"`))
	if err != nil {
		t.Fatal(err)
	}
	if values(t, got) != `"x" "y"` {
		t.Fatalf("values %s", values(t, got))
	}
	if m := strings.Join(methods, ", "); m != "POST 26, GET 0, GET 0, GET 0" {
		t.Fatalf("requests %s, want a POST then GETs without a body", m)
	}
	for _, id := range ids[1:] {
		if id != ids[0] {
			t.Fatalf("batch ids %v, want the POST's on every GET", ids)
		}
	}
}

// TestNoFinalAnswer: an upstream slower than the timeout, one that hangs after its
// headers, a connection that never answers and a 202 without end all fail the batch at
// the timeout, saying so.
func TestNoFinalAnswer(t *testing.T) {
	t.Parallel()
	slow := func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}
	hangAfterHeaders := func(_ int, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `{"data":[[0,`)
		w.(http.Flusher).Flush()
		slow(0, w, r)
	}
	accepted := func(_ int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) }
	for name, handle := range map[string]func(int, http.ResponseWriter, *http.Request){
		"slow": slow, "hanging after headers": hangAfterHeaders, "202 forever": accepted, "hanging connection": nil,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var url string
			if handle != nil {
				srv, _ := server(t, handle)
				url = srv.URL
			} else {
				url = "http://" + silentListener(t)
			}
			f := newFunction(t, url, func(c *upstream.Config) { c.Timeout = 300 * time.Millisecond })
			_, err := f.Call(context.Background(), rowsOf(`1`))
			e := asyncfn.AsError(err)
			if want := "the upstream " + url + " gave no final answer within 300ms, the function's timeout."; e.Kind != asyncfn.Internal || e.Message != want {
				t.Fatalf("error %s %q,\nwant  internal %q", e.Kind, e.Message, want)
			}
		})
	}
}

// silentListener accepts connections and never answers on them.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestCanceled: an attempt ended by the runtime (shutdown, a lost lease) returns its
// cause, not a timeout of the upstream's.
func TestCanceled(t *testing.T) {
	t.Parallel()
	srv, _ := server(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	f := newFunction(t, srv.URL, nil)
	ctx, cancel := context.WithCancelCause(context.Background())
	shutdown := errors.New("shutting down")
	time.AfterFunc(50*time.Millisecond, func() { cancel(shutdown) })
	if _, err := f.Call(ctx, rowsOf(`1`)); !errors.Is(err, shutdown) {
		t.Fatalf("error %v, want the cause %v", err, shutdown)
	}
}

// TestMetrics: requests by class, their latency and the retries are counted under the
// function's label, side by side with another upstream function's.
func TestMetrics(t *testing.T) {
	t.Parallel()
	srv, _ := server(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			http.Error(w, "oops", http.StatusInternalServerError)
			return
		}
		echo(w, r)
	})
	f := newFunction(t, srv.URL, nil)
	other := newFunction(t, srv.URL, func(c *upstream.Config) { c.Name = "other" })
	if _, err := f.Call(context.Background(), rowsOf(`1`)); err != nil {
		t.Fatal(err)
	}
	got := gather(t, f, other)
	want := map[string]float64{
		"asyncfn_upstream_requests_total class=2xx function=up":    1,
		"asyncfn_upstream_requests_total class=5xx function=up":    1,
		"asyncfn_upstream_request_duration_seconds function=up":    2,
		"asyncfn_upstream_retries_total function=up":               1,
		"asyncfn_upstream_request_duration_seconds function=other": 0,
		"asyncfn_upstream_retries_total function=other":            0,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}

// TestConfig: the defaults are valid once Name and URL are set; each bad field is named,
// and a header's value, which may be a secret, is never shown.
func TestConfig(t *testing.T) {
	t.Parallel()
	good := upstream.DefaultConfig()
	good.Name, good.URL = "fn", "https://upstream.example/fn"
	if err := good.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	f, err := upstream.New(good, discard)
	if err != nil {
		t.Fatal(err)
	}
	// The runtime applies the concurrency, and lets the upstream's own timeout end first.
	if fn := f.Function(); fn.Name != "fn" || fn.Concurrency != 16 || fn.Timeout != 15*time.Minute+time.Second {
		t.Errorf("Function() = %s, concurrency %d, timeout %v; want fn, 16, 15m1s", fn.Name, fn.Concurrency, fn.Timeout)
	}
	for _, tt := range []struct {
		field  string
		adjust func(*upstream.Config)
	}{
		{"name", func(c *upstream.Config) { c.Name = "" }},
		{"url", func(c *upstream.Config) { c.URL = "" }},
		{"url", func(c *upstream.Config) { c.URL = "ftp://upstream.example/fn" }},
		{"url", func(c *upstream.Config) { c.URL = "http:///fn" }},
		{"timeout", func(c *upstream.Config) { c.Timeout = 0 }},
		{"min-backoff", func(c *upstream.Config) { c.MinBackoff = -time.Second }},
		{"max-backoff", func(c *upstream.Config) { c.MaxBackoff = time.Millisecond }},
		{"poll-min", func(c *upstream.Config) { c.PollMin = 0 }},
		{"poll-max", func(c *upstream.Config) { c.PollMax = time.Millisecond }},
		{"concurrency", func(c *upstream.Config) { c.Concurrency = 0 }},
		{"request-attempts", func(c *upstream.Config) { c.RequestAttempts = 0 }},
		{"headers", func(c *upstream.Config) { c.Headers = map[string]string{"bad name": "x"} }},
		{"headers", func(c *upstream.Config) {
			c.Headers = map[string]string{"sf-custom-api-key": "secret\r\nX-Injected: 1"}
		}},
	} {
		cfg := good
		tt.adjust(&cfg)
		_, err := upstream.New(cfg, discard)
		var fe *upstream.FieldError
		if !errors.As(err, &fe) || fe.Field != tt.field || strings.Contains(err.Error(), "secret") {
			t.Errorf("%+v: error %v, want one naming field %s without secrets", cfg, err, tt.field)
		}
	}
}
