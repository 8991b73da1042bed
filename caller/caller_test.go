package caller

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fastConfig is a Config whose waits are all short, so tests run fast; nothing asserts
// on time.
func fastConfig(url string) Config {
	return Config{
		URL:         url,
		Function:    Function{Name: "EXT_FUNC", Signature: "(TEXT VARCHAR)", ReturnType: "VARIANT"},
		PollMin:     time.Millisecond,
		PollMax:     2 * time.Millisecond,
		RetryMin:    time.Millisecond,
		RetryMax:    2 * time.Millisecond,
		RetryBudget: time.Minute,
		Timeout:     time.Minute,
	}
}

var threeRows = []Row{{TextValue("a")}, {TextValue("b")}, {TextValue("c")}}

// callOnce sends threeRows to handler once and returns the outcome.
func callOnce(t *testing.T, handler http.HandlerFunc, configure func(*Config)) (Answer, error) {
	t.Helper()
	server := httptest.NewServer(handler)
	t.Cleanup(server.Close)
	cfg := fastConfig(server.URL + "/ext")
	if configure != nil {
		configure(&cfg)
	}
	client, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := client.Encode(threeRows)
	if err != nil {
		t.Fatal(err)
	}
	return client.Call(context.Background(), p)
}

// answer writes a 200 with body.
func answer(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, body)
}

// echoBody is the correct answer to threeRows.
const echoBody = `{"data":[[0,"a"],[1,"b"],[2,"c"]]}`

// sequence answers the n-th request with steps[n], and the last step from then on.
func sequence(steps ...http.HandlerFunc) http.HandlerFunc {
	var mu sync.Mutex
	n := 0
	return func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		step := steps[min(n, len(steps)-1)]
		n++
		mu.Unlock()
		io.Copy(io.Discard, r.Body)
		step(w, r)
	}
}

func status(code int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

func ok(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { answer(w, body) }
}

func compressed(encoding string, body string) []byte {
	var buf bytes.Buffer
	var w io.WriteCloser
	if encoding == "gzip" {
		w = gzip.NewWriter(&buf)
	} else {
		w = zlib.NewWriter(&buf)
	}
	io.WriteString(w, body)
	w.Close()
	return buf.Bytes()
}

func md5Of(b []byte) string {
	sum := md5.Sum(b)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// TestFailures checks that each way a service can misbehave ends the batch as Snowflake
// would, with the same class of error and message.
func TestFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		handler   http.HandlerFunc
		configure func(*Config)
		kind      error
		message   string
	}{
		{
			name:    "wrong number of rows",
			handler: ok(`{"data":[[0,"a"],[1,"b"]]}`),
			kind:    ErrRowCount, message: "Request failed for external function EXT_FUNC. Error: Function received the wrong number of rows: 3 rows were sent, 2 came back",
		},
		{
			name:    "rows out of order",
			handler: ok(`{"data":[[1,"b"],[0,"a"],[2,"c"]]}`),
			kind:    ErrRowOrder, message: "Error: Row numbers out of order: row 0 of the answer is numbered 1",
		},
		{
			name:    "row numbers as strings",
			handler: ok(`{"data":[["0","a"],["1","b"],["2","c"]]}`),
			kind:    ErrRowOrder, message: "Row numbers out of order",
		},
		{
			name:    "invalid JSON",
			handler: ok(`{"data":[[0,"a"],[1,"b"],[2,"c"]]`),
			kind:    ErrInvalidJSON, message: "Error: Error parsing JSON: Invalid response: the answer is not valid JSON",
		},
		{
			name:    "missing data",
			handler: ok(`{"rows":[[0,"a"],[1,"b"],[2,"c"]]}`),
			kind:    ErrMissingData, message: `Error parsing JSON: Invalid response: the answer has no "data" array`,
		},
		{
			name:    "data not an array",
			handler: ok(`{"data":{"0":"a"}}`),
			kind:    ErrMissingData, message: `Error parsing JSON: Invalid response: the answer's "data" is not an array`,
		},
		{
			name:    "not an object",
			handler: ok(`[[0,"a"],[1,"b"],[2,"c"]]`),
			kind:    ErrMissingData, message: `Error parsing JSON: Invalid response`,
		},
		{
			name:    "row with two values",
			handler: ok(`{"data":[[0,"a"],[1,"b","extra"],[2,"c"]]}`),
			kind:    ErrRowValues, message: "Error parsing JSON: Invalid response: row 1 of the answer has 2 values, not one",
		},
		{
			name:    "row without a value",
			handler: ok(`{"data":[[0,"a"],[1],[2,"c"]]}`),
			kind:    ErrRowValues, message: "row 1 of the answer has 0 values, not one",
		},
		{
			name:    "row not an array",
			handler: ok(`{"data":[[0,"a"],{"1":"b"},[2,"c"]]}`),
			kind:    ErrRowValues, message: "not [row number, value]",
		},
		{
			name: "bad Content-MD5",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-MD5", md5Of([]byte("something else")))
				answer(w, echoBody)
			},
			kind: ErrChecksum, message: "Error: Content-MD5 of the response does not match its body",
		},
		{
			name: "body over 10 MB",
			handler: func(w http.ResponseWriter, r *http.Request) {
				answer(w, `{"data":[[0,"a"],[1,"b"],[2,"`+strings.Repeat("x", MaxAnswerBytes)+`"]]}`)
			},
			kind: ErrTooLarge, message: "Error: Response size exceeds the 10 MB limit",
		},
		{
			name: "gzip body over 10 MB once decompressed",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Encoding", "gzip")
				w.Write(compressed("gzip", `{"data":[[0,"a"],[1,"b"],[2,"`+strings.Repeat("x", MaxAnswerBytes)+`"]]}`))
			},
			kind: ErrTooLarge, message: "once decompressed",
		},
		{
			name: "corrupt gzip",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Encoding", "gzip")
				answer(w, echoBody)
			},
			kind: ErrInvalidJSON, message: "the answer is not valid gzip",
		},
		{
			name:    "400 with a message",
			handler: status(http.StatusBadRequest, "row 2: the text is empty.\n"),
			kind:    ErrRemoteStatus, message: "Request failed for external function EXT_FUNC with remote service error: 400 'row 2: the text is empty.'",
		},
		{
			name:    "404",
			handler: status(http.StatusNotFound, `{"message":"no such function"}`),
			kind:    ErrRemoteStatus, message: `with remote service error: 404 '{"message":"no such function"}'`,
		},
		{
			name: "redirect not followed",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "/elsewhere", http.StatusFound)
			},
			kind: ErrRemoteStatus, message: "with remote service error: 302",
		},
		{
			name:      "503 until the retry budget is spent",
			handler:   status(http.StatusServiceUnavailable, "overloaded"),
			configure: func(c *Config) { c.RetryBudget = 10 * time.Millisecond },
			kind:      ErrRemoteStatus, message: "with remote service error: 503 'overloaded'",
		},
		{
			name:      "429 until the retry budget is spent",
			handler:   status(http.StatusTooManyRequests, "slow down"),
			configure: func(c *Config) { c.RetryBudget = 10 * time.Millisecond },
			kind:      ErrRemoteStatus, message: "with remote service error: 429 'slow down'",
		},
		{
			name: "connection dropped until the retry budget is spent",
			handler: func(w http.ResponseWriter, r *http.Request) {
				conn, _, _ := w.(http.Hijacker).Hijack()
				conn.Close()
			},
			configure: func(c *Config) { c.RetryBudget = 10 * time.Millisecond },
			kind:      ErrUnreachable, message: "Error: Remote service cannot be reached. Check the endpoint URL and try again.",
		},
		{
			name:      "202 that never ends",
			handler:   status(http.StatusAccepted, "{}"),
			configure: func(c *Config) { c.Timeout = 50 * time.Millisecond },
			kind:      ErrTimeout, message: "Request failed for external function EXT_FUNC. Error: Timeout was reached",
		},
		{
			name: "POST that never answers",
			handler: func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body) // the server notices a closed connection only then
				<-r.Context().Done()
			},
			configure: func(c *Config) { c.Timeout = 50 * time.Millisecond },
			kind:      ErrTimeout, message: "Timeout was reached",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, err := callOnce(t, tt.handler, tt.configure)
			if !errors.Is(err, tt.kind) {
				t.Fatalf("error %v, want class %v", err, tt.kind)
			}
			var be *BatchError
			if !errors.As(err, &be) || be.BatchID != a.BatchID || a.BatchID == "" {
				t.Fatalf("error %v does not name batch %q", err, a.BatchID)
			}
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("error %q\ndoes not contain %q", err, tt.message)
			}
			if !strings.HasPrefix(err.Error(), "batch "+a.BatchID+": Request failed for external function EXT_FUNC") {
				t.Errorf("error %q does not start with the batch and Snowflake's prefix", err)
			}
		})
	}
}

// TestSuccesses checks answers Snowflake accepts, including after retries and polls.
func TestSuccesses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                             string
		handler                          http.HandlerFunc
		wantPosts, wantGets, wantRetries int
	}{
		{name: "200 on the POST", handler: ok(echoBody)},
		{name: "500 then 200", handler: sequence(status(500, "oops"), ok(echoBody)), wantPosts: 2, wantRetries: 1},
		{
			name: "429 with Retry-After, then 202, then 200",
			handler: sequence(
				func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Retry-After", "0")
					status(http.StatusTooManyRequests, "slow down")(w, r)
				},
				status(http.StatusAccepted, "{}"),
				ok(echoBody)),
			wantPosts: 2, wantGets: 1, wantRetries: 1,
		},
		{
			name:    "202 three times, a 502 on a GET, then 200",
			handler: sequence(status(202, ""), status(202, ""), status(202, ""), status(502, "gateway"), ok(echoBody)),
			// The 502 is on the third GET, retried as a fourth.
			wantRetries: 1, wantGets: 4,
		},
		{
			name: "gzip answer",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Encoding", "gzip")
				w.Write(compressed("gzip", echoBody))
			},
		},
		{
			name: "deflate answer",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Encoding", "deflate")
				w.Write(compressed("deflate", echoBody))
			},
		},
		{
			name: "matching Content-MD5 of a gzip answer",
			handler: func(w http.ResponseWriter, r *http.Request) {
				body := compressed("gzip", echoBody)
				w.Header().Set("Content-Encoding", "gzip")
				w.Header().Set("Content-MD5", md5Of(body))
				w.Write(body)
			},
		},
		{name: "spaces and escaped keys", handler: ok(" { \"rows\" : 1 , \"d\\u0061ta\" : [ [ 0 , \"a\" ] ,\n[1,\"b\"],[2 , \"c\" ] ] } ")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, err := callOnce(t, tt.handler, nil)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, v := range a.Values {
				var s string
				if err := json.Unmarshal(v, &s); err != nil {
					t.Fatalf("value %s: %v", v, err)
				}
				got = append(got, s)
			}
			if strings.Join(got, ",") != "a,b,c" {
				t.Errorf("values %q, want a, b, c", got)
			}
			wantPosts := max(tt.wantPosts, 1)
			if len(a.Stats.Posts) != wantPosts || len(a.Stats.Gets) != tt.wantGets || a.Stats.Retries != tt.wantRetries {
				t.Errorf("%d POSTs, %d GETs and %d retries, want %d, %d and %d",
					len(a.Stats.Posts), len(a.Stats.Gets), a.Stats.Retries, wantPosts, tt.wantGets, tt.wantRetries)
			}
		})
	}
}

// TestCanceled checks that cancelling the caller's context ends a polling batch at once
// with its own class, not as a Snowflake timeout.
func TestCanceled(t *testing.T) {
	t.Parallel()
	server := httptest.NewServer(status(http.StatusAccepted, "{}"))
	defer server.Close()
	client, err := NewClient(fastConfig(server.URL))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := client.Encode(threeRows)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := client.Call(ctx, p)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, ErrCanceled) {
		t.Fatalf("error %v, want ErrCanceled", err)
	}
}

// TestHeaders checks that every POST retry and every GET of a batch carries the same
// batch id and the same full set of headers Snowflake sends, that base64 twins decode to
// the exact values and the plain ones have odd characters blanked, and that retries
// resend the same body.
func TestHeaders(t *testing.T) {
	t.Parallel()
	type request struct {
		method string
		header http.Header
		body   []byte
	}
	var mu sync.Mutex
	var requests []request
	steps := sequence(
		status(500, "retry the POST"),
		status(429, "and again"),
		status(202, "{}"),
		status(503, "retry the GET"),
		status(202, "{}"),
		ok(echoBody),
	)
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		requests = append(requests, request{r.Method, r.Header.Clone(), body})
		mu.Unlock()
		steps(w, r)
	}))
	defer server.Close()

	cfg := fastConfig(server.URL + "/sentiment")
	cfg.Function = Function{Name: "SENTIMENT", Signature: "(TEXT VARCHAR, ÉTÉ\tNUMBER)", ReturnType: "VARIANT"}
	cfg.QueryID = "01b2c3d4-0000-1111-0000-000000000042"
	cfg.CustomHeaders = map[string]string{"Team": "data", "region": "eu"}
	cfg.ContextHeaders = map[string]string{"current_user": "JOSÉ", "current_role": "ANALYST"}
	cfg.Compression = CompressionGzip
	client, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := client.Encode(threeRows)
	a, err := client.Call(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}

	want := map[string]string{
		"Sf-External-Function-Query-Batch-Id":     a.BatchID,
		"Sf-External-Function-Current-Query-Id":   cfg.QueryID,
		"Sf-External-Function-Query-Id":           cfg.QueryID,
		"Sf-External-Function-Format":             "json",
		"Sf-External-Function-Format-Version":     "1.0",
		"Sf-External-Function-Name":               "SENTIMENT",
		"Sf-External-Function-Name-Base64":        base64.StdEncoding.EncodeToString([]byte("SENTIMENT")),
		"Sf-External-Function-Signature":          "(TEXT VARCHAR,  T  NUMBER)",
		"Sf-External-Function-Signature-Base64":   base64.StdEncoding.EncodeToString([]byte(cfg.Function.Signature)),
		"Sf-External-Function-Return-Type":        "VARIANT",
		"Sf-External-Function-Return-Type-Base64": base64.StdEncoding.EncodeToString([]byte("VARIANT")),
		"Sf-Custom-Team":                          "data",
		"Sf-Custom-Region":                        "eu",
		"Sf-Context-Current_user":                 "JOS", // the blank for É, trimmed as HTTP does
		"Sf-Context-Current_user-Base64":          base64.StdEncoding.EncodeToString([]byte("JOSÉ")),
		"Sf-Context-Current_role":                 "ANALYST",
		"Sf-Context-Current_role-Base64":          base64.StdEncoding.EncodeToString([]byte("ANALYST")),
		"User-Agent":                              "snowflake/1.0",
		"Content-Type":                            "application/json",
		"Content-Encoding":                        "gzip",
		"Accept-Encoding":                         "gzip",
	}
	if !strings.HasPrefix(a.BatchID, cfg.QueryID+":") {
		t.Errorf("batch id %q does not start with the query id", a.BatchID)
	}
	methods := ""
	for i, r := range requests {
		methods += r.method + " "
		for name, value := range want {
			if got := r.header.Values(name); len(got) != 1 || got[0] != value {
				t.Errorf("request %d (%s): %s is %q, want %q", i, r.method, name, got, value)
			}
		}
		for name := range r.header {
			if _, ok := want[name]; !ok && !(name == "Content-Length" && r.method == http.MethodPost) {
				t.Errorf("request %d (%s): unexpected header %s", i, r.method, name)
			}
		}
		for name, values := range r.header {
			if twin, ok := strings.CutSuffix(name, "-Base64"); ok {
				exact, err := base64.StdEncoding.DecodeString(values[0])
				if err != nil || strings.TrimSpace(PlainHeaderValue(string(exact))) != r.header.Get(twin) {
					t.Errorf("request %d: %s decodes to %q, which does not match %s %q", i, name, exact, twin, r.header.Get(twin))
				}
			}
		}
		if r.method == http.MethodPost && !bytes.Equal(r.body, requests[0].body) {
			t.Errorf("request %d: the retried POST's body differs from the first", i)
		}
		if r.method == http.MethodGet && len(r.body) != 0 {
			t.Errorf("request %d: a GET has a body", i)
		}
	}
	if methods != "POST POST POST GET GET GET " {
		t.Errorf("requests %s, want three POSTs then three GETs", methods)
	}

	// The body is gzip-compressed Snowflake JSON.
	body, ae := decode("gzip", requests[0].body)
	if ae != nil || string(body) != `{"data":[[0,"a"],[1,"b"],[2,"c"]]}` {
		t.Errorf("body %q (%v)", body, ae)
	}

	// Another batch of the same query gets another id.
	b, err := client.Call(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if b.BatchID == a.BatchID || !strings.HasPrefix(b.BatchID, cfg.QueryID+":") {
		t.Errorf("second batch id %q, first %q", b.BatchID, a.BatchID)
	}
}

// TestHeaderNamesOnTheWire checks that sf-* headers are sent lower-case, as they arrive
// through Snowflake's proxies, and that no default User-Agent is added.
func TestHeaderNamesOnTheWire(t *testing.T) {
	t.Parallel()
	client, err := NewClient(fastConfig("http://127.0.0.1:1/f"))
	if err != nil {
		t.Fatal(err)
	}
	var wire bytes.Buffer
	if err := client.header.Write(&wire); err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(wire.String()) {
		name, _, _ := strings.Cut(line, ":")
		if strings.HasPrefix(strings.ToLower(name), "sf-") && name != strings.ToLower(name) {
			t.Errorf("header %q is not lower-case", name)
		}
	}
	if got := client.header.Values("User-Agent"); len(got) != 1 || got[0] != "snowflake/1.0" {
		t.Errorf("User-Agent %q", got)
	}
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		backoff, limit time.Duration
		retryAfter     string
		jitter         float64
		want           time.Duration
	}{
		{time.Second, 10 * time.Second, "", 0, 500 * time.Millisecond},
		{time.Second, 10 * time.Second, "", 0.5, 750 * time.Millisecond},
		{8 * time.Second, 2 * time.Second, "", 0.5, 2 * time.Second},
		{time.Second, 10 * time.Second, "3", 0.9, 3 * time.Second},
		{time.Second, 10 * time.Second, "60", 0, 10 * time.Second},
		{time.Second, 10 * time.Second, "0", 0, 0},
		{time.Second, 10 * time.Second, now.Add(4 * time.Second).Format(http.TimeFormat), 0, 4 * time.Second},
		{time.Second, 10 * time.Second, now.Add(-time.Hour).Format(http.TimeFormat), 0, 0},
		{time.Second, 10 * time.Second, "soon", 0, 500 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := RetryDelay(tt.backoff, tt.limit, tt.retryAfter, now, tt.jitter); got != tt.want {
			t.Errorf("RetryDelay(%v, %v, %q, %v) = %v, want %v", tt.backoff, tt.limit, tt.retryAfter, tt.jitter, got, tt.want)
		}
	}
}

func TestNewClientDefaults(t *testing.T) {
	t.Parallel()
	client, err := NewClient(Config{URL: "http://127.0.0.1:8080/v1/sentiment-en/"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := client.Config()
	if cfg.Function.Name != "SENTIMENT_EN" || cfg.Timeout != DefaultTimeout || cfg.MaxBatchRows != 4096 ||
		cfg.Concurrency != DefaultConcurrency || cfg.Compression != CompressionNone || len(cfg.QueryID) != 36 {
		t.Errorf("defaults %+v", cfg)
	}
	for _, bad := range []Config{
		{URL: "ftp://host/x"},
		{URL: "http:///x"},
		{URL: "http://h/x", Compression: "br"},
		{URL: "http://h/x", Timeout: -1},
		{URL: "http://h/x", Concurrency: -1},
	} {
		if _, err := NewClient(bad); err == nil {
			t.Errorf("NewClient(%+v) accepted", bad)
		}
	}
}

func ExamplePlainHeaderValue() {
	fmt.Println(PlainHeaderValue("(NAME VARCHAR, CAFÉ NUMBER)"))
	// Output: (NAME VARCHAR, CAF  NUMBER)
}

// refusedURL returns a loopback URL on which connections are refused: a port that was
// just listened on and closed.
func refusedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	return "http://" + ln.Addr().String() + "/ext"
}

// TestRefused checks that a connection refused before the service ever answered fails
// at once, without a retry; that WaitForService retries it, telling OnRetry why; and
// that a refusal after an answer (a restart) is retried as any transport error.
func TestRefused(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var retries []Retry
	onRetry := func(r Retry) {
		mu.Lock()
		defer mu.Unlock()
		retries = append(retries, r)
	}
	call := func(url string, configure func(*Config)) (*Client, Answer, error) {
		cfg := fastConfig(url)
		cfg.OnRetry = onRetry
		cfg.RetryBudget = 20 * time.Millisecond
		configure(&cfg)
		client, err := NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := client.Encode(threeRows)
		a, err := client.Call(context.Background(), p)
		return client, a, err
	}

	url := refusedURL(t)
	_, a, err := call(url, func(*Config) {})
	if !errors.Is(err, ErrRefused) || !errors.Is(err, ErrUnreachable) || a.Stats.Retries != 0 || len(retries) != 0 ||
		!strings.Contains(err.Error(), "Remote service cannot be reached. Check the endpoint URL and try again. Last error: ") ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Errorf("refused from the start: %v after %d retries, OnRetry %v; want ErrRefused at once", err, a.Stats.Retries, retries)
	}

	_, a, err = call(url, func(c *Config) { c.WaitForService = true })
	if !errors.Is(err, ErrUnreachable) || errors.Is(err, ErrRefused) || a.Stats.Retries == 0 || len(retries) != a.Stats.Retries {
		t.Errorf("waiting for the service: %v after %d retries, %d told; want ErrUnreachable after retries, each told", err, a.Stats.Retries, len(retries))
	}
	if r := retries[0]; r.Reason != "connection refused" || r.Method != http.MethodPost || r.URL != url || r.BatchID != a.BatchID || r.Budget != 20*time.Millisecond {
		t.Errorf("OnRetry got %+v", r)
	}

	server := httptest.NewServer(ok(`{"data":[[0,1],[1,2],[2,3]]}`))
	client, _, err := call(server.URL, func(*Config) {})
	if err != nil {
		t.Fatal(err)
	}
	server.Close()
	p, _ := client.Encode(threeRows)
	a, err = client.Call(context.Background(), p)
	if !errors.Is(err, ErrUnreachable) || errors.Is(err, ErrRefused) || a.Stats.Retries == 0 {
		t.Errorf("refused after an answer: %v after %d retries; want ErrUnreachable after retries", err, a.Stats.Retries)
	}
}
