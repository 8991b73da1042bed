package lambda

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/comprehend"
	"github.com/asyncfn/asyncfn/comprehend/comprehendtest"
	"github.com/asyncfn/asyncfn/memory"
	"github.com/asyncfn/asyncfn/sentiment"
)

// fakeLambda serves the Lambda Invoke API to the Dispatcher. It records every worker event
// and, while run is set, hands it to that handler in the background and answers 202 at
// once, as Lambda does with an Event invocation.
type fakeLambda struct {
	*httptest.Server
	run  atomic.Pointer[Handler]
	fail atomic.Bool // answer as Lambda does for a function that does not exist

	mu     sync.Mutex
	events []json.RawMessage
	wg     sync.WaitGroup
}

func newFakeLambda(t *testing.T) *fakeLambda {
	f := &fakeLambda{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Amz-Invocation-Type") != "Event" || !strings.HasPrefix(r.URL.Path, "/2015-03-31/functions/worker/invocations") {
			t.Errorf("unexpected Lambda API call %s %s (invocation type %q)", r.Method, r.URL, r.Header.Get("X-Amz-Invocation-Type"))
		}
		if f.fail.Load() {
			w.Header().Set("X-Amzn-ErrorType", "ResourceNotFoundException")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"Type":"User","message":"Function not found: worker"}`)
			return
		}
		payload, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.events = append(f.events, payload)
		f.mu.Unlock()
		if h := f.run.Load(); h != nil {
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				if _, err := h.Invoke(context.Background(), payload); err != nil {
					t.Errorf("worker invocation: %v", err)
				}
			}()
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(func() { f.wg.Wait(); f.Close() })
	return f
}

func (f *fakeLambda) recorded() []json.RawMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]json.RawMessage(nil), f.events...)
}

// stack is the function wired by New on a memory store, its worker events going to a fake
// Lambda API that runs them on the same handler.
type stack struct {
	h      *Handler
	lambda *fakeLambda
	store  asyncfn.Store
}

func newStack(t *testing.T, functions ...asyncfn.Function) *stack {
	return newStackEnv(t, nil, functions...)
}

// newStackEnv is newStack with more environment variables for LoadConfig.
func newStackEnv(t *testing.T, extra map[string]string, functions ...asyncfn.Function) *stack {
	t.Setenv("AWS_ACCESS_KEY_ID", comprehendtest.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_REGION", "us-east-1")
	fake := newFakeLambda(t)
	env := map[string]string{
		"ASYNCFN_STORE":           "dynamodb://unused",
		"ASYNCFN_WORKER_FUNCTION": "worker",
		"ASYNCFN_LAMBDA_ENDPOINT": fake.URL,
		"ASYNCFN_POLL_WAIT":       "3s",
		"ASYNCFN_STALLED":         "100ms",
		"ASYNCFN_LOG_FORMAT":      "text",
	}
	maps.Copy(env, extra)
	cfg, err := LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	store := memory.New()
	h, err := New(context.Background(), cfg, store, slog.New(slog.NewTextHandler(t.Output(), nil)), functions...)
	if err != nil {
		t.Fatal(err)
	}
	fake.run.Store(h)
	return &stack{h: h, lambda: fake, store: store}
}

func shippedFunctions() []asyncfn.Function {
	return append([]asyncfn.Function{{Name: "echo", Func: asyncfn.Echo}}, sentiment.Functions()...)
}

// answer is an HTTP response out of any of the three response types.
type answer struct {
	status int
	header http.Header
	body   string
}

// invoke hands h an HTTP event and returns the answer.
func invoke(t *testing.T, h *Handler, event json.RawMessage) answer {
	t.Helper()
	resp, err := h.Invoke(t.Context(), event)
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	return toAnswer(t, resp)
}

func toAnswer(t *testing.T, resp any) answer {
	t.Helper()
	var a answer
	var base64Body bool
	switch r := resp.(type) {
	case events.APIGatewayProxyResponse:
		a = answer{r.StatusCode, http.Header(r.MultiValueHeaders), r.Body}
		base64Body = r.IsBase64Encoded
	case events.APIGatewayV2HTTPResponse:
		a = answer{r.StatusCode, http.Header{}, r.Body}
		for k, v := range r.Headers {
			a.header.Set(k, v)
		}
		base64Body = r.IsBase64Encoded
	case events.LambdaFunctionURLResponse:
		a = answer{r.StatusCode, http.Header{}, r.Body}
		for k, v := range r.Headers {
			a.header.Set(k, v)
		}
		base64Body = r.IsBase64Encoded
	default:
		t.Fatalf("Invoke returned %T", resp)
	}
	if base64Body {
		b, err := base64.StdEncoding.DecodeString(a.body)
		if err != nil {
			t.Fatal(err)
		}
		a.body = string(b)
	}
	return a
}

// eventKind builds the event of one kind of proxy for a request.
type eventKind struct {
	name  string
	build func(method, path string, header map[string]string, body []byte) json.RawMessage
}

// The header names keep the case the test gives: REST APIs pass the client's case, HTTP
// APIs and function URLs lower-case them.
var eventKinds = []eventKind{
	{"REST API (v1)", func(method, path string, header map[string]string, body []byte) json.RawMessage {
		e := events.APIGatewayProxyRequest{HTTPMethod: method, Path: path, Resource: "/{proxy+}",
			PathParameters: map[string]string{"proxy": strings.TrimPrefix(path, "/")},
			Headers:        header, MultiValueHeaders: map[string][]string{}, Body: string(body)}
		for k, v := range header {
			e.MultiValueHeaders[k] = []string{v}
		}
		return mustJSON(e)
	}},
	{"HTTP API (v2)", func(method, path string, header map[string]string, body []byte) json.RawMessage {
		e := events.APIGatewayV2HTTPRequest{Version: "2.0", RouteKey: "ANY /{proxy+}", RawPath: "/prod" + path,
			PathParameters: map[string]string{"proxy": strings.TrimPrefix(path, "/")}, Headers: lower(header), Body: string(body)}
		e.RequestContext.HTTP.Method = method
		e.RequestContext.DomainName = "abc123.execute-api.us-east-1.amazonaws.com"
		e.RequestContext.Stage = "prod"
		return mustJSON(e)
	}},
	{"function URL", func(method, path string, header map[string]string, body []byte) json.RawMessage {
		e := events.LambdaFunctionURLRequest{Version: "2.0", RawPath: path, Headers: lower(header),
			Body: base64.StdEncoding.EncodeToString(body), IsBase64Encoded: true}
		e.RequestContext.HTTP.Method = method
		e.RequestContext.DomainName = "abcdefgh.lambda-url.us-east-1.on.aws"
		return mustJSON(e)
	}},
}

func lower(header map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range header {
		out[strings.ToLower(k)] = v
	}
	return out
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func batchHeader(id string) map[string]string {
	return map[string]string{"SF-External-Function-Query-Batch-ID": id, "Content-Type": "application/json"}
}

func TestServesEveryEventKind(t *testing.T) {
	s := newStack(t, shippedFunctions()...)
	body := []byte(`{"data":[[0,"hello world"],[1,"I am happy"]]}`)
	wantType := []any{events.APIGatewayProxyResponse{}, events.APIGatewayV2HTTPResponse{}, events.LambdaFunctionURLResponse{}}
	for i, kind := range eventKinds {
		t.Run(kind.name, func(t *testing.T) {
			header := batchHeader("q1:1:1:0:" + fmt.Sprint(i))
			resp, err := s.h.Invoke(t.Context(), kind.build("POST", "/sentiment", header, body))
			if fmt.Sprintf("%T", resp) != fmt.Sprintf("%T", wantType[i]) {
				t.Errorf("POST answered with a %T, want %T", resp, wantType[i])
			}
			if err != nil {
				t.Fatal(err)
			}
			if a := toAnswer(t, resp); a.status != http.StatusAccepted || !strings.Contains(a.body, `"state"`) {
				t.Fatalf("POST: %d %s, want 202 with the state", a.status, a.body)
			}
			a := invoke(t, s.h, kind.build("GET", "/sentiment", header, nil))
			if a.status != http.StatusOK || a.header.Get("Content-Type") != "application/json" {
				t.Fatalf("GET: %d %v %s, want 200 with JSON", a.status, a.header, a.body)
			}
			checkSentiment(t, a.body, []string{"NEUTRAL", "POSITIVE"})
		})
	}
	if n := len(s.lambda.recorded()); n != len(eventKinds) {
		t.Errorf("%d worker invocations for %d batches", n, len(eventKinds))
	}
}

// checkSentiment checks a sentiment answer: one row per input row, numbered in order, each
// in AWS Comprehend's shape.
func checkSentiment(t *testing.T, body string, want []string) {
	t.Helper()
	var out struct {
		Data [][2]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil || len(out.Data) != len(want) {
		t.Fatalf("answer %.200s: %v, want %d rows", body, err, len(want))
	}
	for i, row := range out.Data {
		var v struct {
			Sentiment                          string
			Positive, Negative, Neutral, Mixed *float64
		}
		if string(row[0]) != fmt.Sprint(i) || json.Unmarshal(row[1], &v) != nil ||
			v.Sentiment != want[i] || v.Positive == nil || v.Negative == nil || v.Neutral == nil || v.Mixed == nil {
			t.Errorf("row %d: %s %s, want row number %d and sentiment %s with the four scores", i, row[0], row[1], i, want[i])
		}
	}
}

// seen is what the HTTP handler received.
type seen struct {
	method, uri, host, remote string
	header                    http.Header
	body                      string
}

func recordingHandler(got *seen) *Handler {
	return &Handler{Logger: slog.New(slog.DiscardHandler), HTTP: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		*got = seen{r.Method, r.RequestURI, r.Host, r.RemoteAddr, r.Header, string(b)}
	})}
}

func TestRequestConversion(t *testing.T) {
	gz := gzipped(t, `{"data":[[0,"x"]]}`)
	v1 := events.APIGatewayProxyRequest{
		HTTPMethod: "POST", Path: "/base/sentiment", Resource: "/{proxy+}",
		PathParameters: map[string]string{"proxy": "sentiment"},
		Headers:        map[string]string{"X-Multi": "b", "Host": "api.example.com"},
		MultiValueHeaders: map[string][]string{
			"X-Multi": {"a", "b"}, "sf-external-function-query-batch-id": {"id-1"}, "Host": {"api.example.com"},
			"Content-Encoding": {"gzip"},
		},
		MultiValueQueryStringParameters: map[string][]string{"q": {"1", "2"}},
		Body:                            base64.StdEncoding.EncodeToString(gz), IsBase64Encoded: true,
	}
	v1.RequestContext.Identity.SourceIP = "192.0.2.1"
	v2 := events.APIGatewayV2HTTPRequest{Version: "2.0", RawPath: "/prod/echo", RawQueryString: "a=1&a=2",
		PathParameters: map[string]string{"proxy": "echo"}, Cookies: []string{"c=1", "d=2"},
		Headers: map[string]string{"sf-external-function-query-batch-id": "id-2", "x-multi": "a,b", "content-encoding": "gzip"},
		Body:    `{"data":[[0,"é"]]}`}
	v2.RequestContext.HTTP.Method, v2.RequestContext.HTTP.SourceIP = "POST", "192.0.2.2"
	url := events.LambdaFunctionURLRequest{Version: "2.0", RawPath: "/vader", Headers: map[string]string{"sf-external-function-query-batch-id": "id-3"}}
	url.RequestContext.HTTP.Method = "GET"
	url.RequestContext.DomainName = "x.lambda-url.eu-west-1.on.aws"
	onlyHeaders := events.APIGatewayProxyRequest{HTTPMethod: "GET", Path: "/echo",
		Headers: map[string]string{"SF-EXTERNAL-FUNCTION-QUERY-BATCH-ID": "id-4"}, QueryStringParameters: map[string]string{"x": "y"}}

	for _, tc := range []struct {
		name  string
		event any
		want  seen
	}{
		{"v1, multi-value headers, base64 gzip body", v1, seen{method: "POST", uri: "/sentiment?q=1&q=2", host: "api.example.com", remote: "192.0.2.1",
			header: http.Header{"X-Multi": {"a", "b"}, "Sf-External-Function-Query-Batch-Id": {"id-1"}, "Host": {"api.example.com"}, "Content-Encoding": {"gzip"}},
			body:   string(gz)}},
		{"v2, text body already decompressed, cookies", v2, seen{method: "POST", uri: "/echo?a=1&a=2", remote: "192.0.2.2",
			header: http.Header{"Sf-External-Function-Query-Batch-Id": {"id-2"}, "X-Multi": {"a,b"}, "Cookie": {"c=1; d=2"}},
			body:   `{"data":[[0,"é"]]}`}},
		{"function URL GET", url, seen{method: "GET", uri: "/vader", header: http.Header{"Sf-External-Function-Query-Batch-Id": {"id-3"}}}},
		{"v1, single-value headers only", onlyHeaders, seen{method: "GET", uri: "/echo?x=y", header: http.Header{"Sf-External-Function-Query-Batch-Id": {"id-4"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got seen
			if _, err := recordingHandler(&got).Invoke(t.Context(), mustJSON(tc.event)); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("the handler got\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func gzipped(t *testing.T, s string) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	io.WriteString(zw, s)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestResponseEncoding(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		base64     bool
	}{
		{"UTF-8 text as it is", `{"data":[[0,"é <&>"]]}`, false},
		{"other bytes in base64", "\xff\xfe binary", true},
	} {
		h := &Handler{HTTP: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Add("X-A", "1")
			w.Header().Add("X-A", "2")
			w.Header().Add("Set-Cookie", "s=1")
			w.Header().Add("Set-Cookie", "t=2")
			w.WriteHeader(http.StatusTeapot)
			io.WriteString(w, tc.body)
		})}
		t.Run(tc.name, func(t *testing.T) {
			for i, kind := range eventKinds {
				resp, err := h.Invoke(t.Context(), kind.build("GET", "/x", nil, nil))
				if err != nil {
					t.Fatal(err)
				}
				var got struct {
					StatusCode        int
					Headers           map[string]string
					MultiValueHeaders map[string][]string
					Cookies           []string
					Body              string
					IsBase64Encoded   bool
				}
				json.Unmarshal(mustJSON(resp), &got)
				if got.StatusCode != http.StatusTeapot || got.IsBase64Encoded != tc.base64 {
					t.Errorf("%s: status %d, base64 %v", kind.name, got.StatusCode, got.IsBase64Encoded)
				}
				if a := toAnswer(t, resp); a.body != tc.body {
					t.Errorf("%s: body %q, want %q", kind.name, a.body, tc.body)
				}
				if i == 0 { // REST APIs take every value of a header
					if fmt.Sprint(got.MultiValueHeaders["X-A"], got.MultiValueHeaders["Set-Cookie"]) != "[1 2] [s=1 t=2]" {
						t.Errorf("%s: multi-value headers %v", kind.name, got.MultiValueHeaders)
					}
				} else if got.Headers["X-A"] != "1, 2" || fmt.Sprint(got.Cookies) != "[s=1 t=2]" {
					t.Errorf("%s: headers %v, cookies %v", kind.name, got.Headers, got.Cookies)
				}
			}
		})
	}
}

func TestResponseTooLargeForLambda(t *testing.T) {
	h := &Handler{HTTP: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, strings.Repeat("a", MaxResponseBytes))
	})}
	a := invoke(t, h, eventKinds[0].build("GET", "/echo", nil, nil))
	if a.status != http.StatusUnprocessableEntity || !strings.Contains(a.body, "MAX_BATCH_ROWS") || a.header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Errorf("got %d %v %q, want 422 telling to lower MAX_BATCH_ROWS", a.status, a.header, a.body)
	}
}

func TestCompressedBodies(t *testing.T) {
	s := newStack(t, shippedFunctions()...)
	const body = `{"data":[[0,"a"],[1,"b"]]}`
	for _, tc := range []struct {
		name  string
		event events.APIGatewayProxyRequest
	}{
		// Through binary media types, a body arrives as sent, in base64.
		{"gzip in base64", events.APIGatewayProxyRequest{Body: base64.StdEncoding.EncodeToString(gzipped(t, body)), IsBase64Encoded: true}},
		// API Gateway decompresses a body it passes as text, but keeps the header.
		{"decompressed by API Gateway", events.APIGatewayProxyRequest{Body: body}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.event
			e.HTTPMethod, e.Path = "POST", "/echo"
			e.Headers = map[string]string{"sf-external-function-query-batch-id": tc.name, "Content-Encoding": "gzip"}
			if a := invoke(t, s.h, mustJSON(e)); a.status != http.StatusAccepted {
				t.Fatalf("POST: %d %s", a.status, a.body)
			}
			e.HTTPMethod, e.Body, e.IsBase64Encoded = "GET", "", false
			if a := invoke(t, s.h, mustJSON(e)); a.status != http.StatusOK || a.body != `{"data":[[0,"a"],[1,"b"]]}` {
				t.Fatalf("GET: %d %s", a.status, a.body)
			}
		})
	}
}

func TestUnknownEvents(t *testing.T) {
	h := &Handler{}
	for _, event := range []string{`{"Records":[]}`, `[1]`, `{"version":"2.0"}`} {
		if _, err := h.Invoke(t.Context(), json.RawMessage(event)); err == nil {
			t.Errorf("event %s: no error", event)
		}
	}
}

// counting returns a function that counts its calls and waits for release before answering
// (release nil: at once).
func counting(calls *atomic.Int32, started chan<- struct{}, release <-chan struct{}) asyncfn.Function {
	return asyncfn.Function{Name: "count", Func: asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
		calls.Add(1)
		if started != nil {
			started <- struct{}{}
		}
		if release != nil {
			<-release
		}
		return asyncfn.Echo.Call(ctx, rows)
	})}
}

func post(t *testing.T, h *Handler, function, batchID, body string) answer {
	t.Helper()
	return invoke(t, h, eventKinds[0].build("POST", "/"+function, batchHeader(batchID), []byte(body)))
}

func get(t *testing.T, h *Handler, function, batchID string) answer {
	t.Helper()
	return invoke(t, h, eventKinds[1].build("GET", "/"+function, batchHeader(batchID), nil))
}

func TestWorkerEventDeliveredTwiceRunsOnce(t *testing.T) {
	var calls atomic.Int32
	s := newStack(t, counting(&calls, nil, nil))
	s.lambda.run.Store(nil) // keep the events: the test delivers them
	if a := post(t, s.h, "count", "b1", `{"data":[[0,1]]}`); a.status != http.StatusAccepted {
		t.Fatalf("POST: %d %s", a.status, a.body)
	}
	events := s.lambda.recorded()
	if len(events) != 1 || string(events[0]) != `{"asyncfn":{"function":"count","batch_id":"b1"}}` {
		t.Fatalf("worker events %s, want one naming the batch only", events)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if _, err := s.h.Invoke(t.Context(), events[0]); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if _, err := s.h.Invoke(t.Context(), events[0]); err != nil {
		t.Fatal(err)
	}
	b, err := s.store.Get(t.Context(), asyncfn.Key{Function: "count", BatchID: "b1"}, time.Now(), false)
	if err != nil || calls.Load() != 1 || b.State != asyncfn.Succeeded || b.Attempts != 1 {
		t.Fatalf("after 4 deliveries: %d calls, batch %+v (%v); want 1 call, succeeded after 1 attempt", calls.Load(), b, err)
	}
}

func TestPOSTRetriedWhileRunningStartsNothing(t *testing.T) {
	var calls atomic.Int32
	started, release := make(chan struct{}, 1), make(chan struct{})
	s := newStack(t, counting(&calls, started, release))
	const body = `{"data":[[0,"x"]]}`
	if a := post(t, s.h, "count", "b1", body); a.status != http.StatusAccepted {
		t.Fatalf("POST: %d %s", a.status, a.body)
	}
	<-started
	if a := post(t, s.h, "count", "b1", body); a.status != http.StatusAccepted || a.body != `{"state":"running"}` {
		t.Errorf("retried POST: %d %s, want 202 running", a.status, a.body)
	}
	if n := len(s.lambda.recorded()); n != 1 {
		t.Errorf("the retried POST invoked a worker: %d invocations", n)
	}
	close(release)
	if a := get(t, s.h, "count", "b1"); a.status != http.StatusOK || a.body != `{"data":[[0,"x"]]}` {
		t.Fatalf("GET: %d %s", a.status, a.body)
	}
	if calls.Load() != 1 {
		t.Errorf("the function ran %d times", calls.Load())
	}
}

func TestFailedInvokeAnswers503ThenRetrySucceeds(t *testing.T) {
	s := newStack(t, shippedFunctions()...)
	s.lambda.fail.Store(true)
	const body = `{"data":[[0,"hello"]]}`
	a := post(t, s.h, "echo", "b1", body)
	if a.status != http.StatusServiceUnavailable || !strings.Contains(a.body, "could not start a worker") {
		t.Fatalf("POST with the worker function missing: %d %s, want 503", a.status, a.body)
	}
	s.lambda.fail.Store(false)
	time.Sleep(150 * time.Millisecond) // past ASYNCFN_STALLED
	if a := post(t, s.h, "echo", "b1", body); a.status != http.StatusAccepted {
		t.Fatalf("retried POST: %d %s", a.status, a.body)
	}
	if a := get(t, s.h, "echo", "b1"); a.status != http.StatusOK || a.body != `{"data":[[0,"hello"]]}` {
		t.Fatalf("GET: %d %s", a.status, a.body)
	}
}

func TestDeadWorkersBatchIsDispatchedAgain(t *testing.T) {
	s := newStack(t, shippedFunctions()...)
	s.lambda.run.Store(nil) // the first invocation never runs
	if a := post(t, s.h, "echo", "b1", `{"data":[[0,"hello"]]}`); a.status != http.StatusAccepted {
		t.Fatalf("POST: %d %s", a.status, a.body)
	}
	key := asyncfn.Key{Function: "echo", BatchID: "b1"}
	// A worker claims the batch, then dies.
	if _, err := s.store.ClaimKey(t.Context(), key, asyncfn.ClaimParams{Owner: "dead", Now: time.Now(), Lease: 50 * time.Millisecond, Limit: 1}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	s.lambda.run.Store(s.h)
	if a := get(t, s.h, "echo", "b1"); a.status != http.StatusOK || a.body != `{"data":[[0,"hello"]]}` {
		t.Fatalf("GET: %d %s", a.status, a.body)
	}
	b, err := s.store.Get(t.Context(), key, time.Now(), false)
	if err != nil || b.Attempts != 2 || len(s.lambda.recorded()) != 2 {
		t.Errorf("batch %+v (%v) after %d invocations; want 2 attempts and 2 invocations", b, err, len(s.lambda.recorded()))
	}
}

func TestWorkerOutlivesTheInvocationDeadline(t *testing.T) {
	slow := asyncfn.Function{Name: "slow", Func: asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
		select {
		case <-time.After(100 * time.Millisecond):
			return asyncfn.Echo.Call(ctx, rows)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})}
	s := newStack(t, slow)
	s.lambda.run.Store(nil)
	if a := post(t, s.h, "slow", "b1", `{"data":[[0,1]]}`); a.status != http.StatusAccepted {
		t.Fatalf("POST: %d %s", a.status, a.body)
	}
	// Lambda's deadline passes mid-batch; in Lambda the invocation would be stopped there.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if _, err := s.h.Invoke(ctx, s.lambda.recorded()[0]); err != nil {
		t.Fatal(err)
	}
	b, err := s.store.Get(t.Context(), asyncfn.Key{Function: "slow", BatchID: "b1"}, time.Now(), false)
	if err != nil || b.State != asyncfn.Succeeded || b.Attempts != 1 {
		t.Fatalf("batch %+v (%v), want succeeded: never handed back uncounted", b, err)
	}
}

func TestWorkerEventErrors(t *testing.T) {
	s := newStack(t, shippedFunctions()...)
	// No retry can help an event for a function this binary does not serve.
	if _, err := s.h.Invoke(t.Context(), json.RawMessage(`{"asyncfn":{"function":"nope","batch_id":"b"}}`)); err != nil {
		t.Errorf("unknown function: %v, want nil (no retry)", err)
	}
	// An event for a batch that is gone (expired, or never stored) has nothing to do.
	if _, err := s.h.Invoke(t.Context(), json.RawMessage(`{"asyncfn":{"function":"echo","batch_id":"gone"}}`)); err != nil {
		t.Errorf("unknown batch: %v, want nil", err)
	}
	// A store that fails: Lambda's retry of the event may find it back.
	s.store.Close()
	if _, err := s.h.Invoke(t.Context(), json.RawMessage(`{"asyncfn":{"function":"echo","batch_id":"b"}}`)); err == nil {
		t.Error("store closed: nil error, want one so that Lambda retries the event")
	}
}

func TestLoadConfig(t *testing.T) {
	base := map[string]string{"ASYNCFN_STORE": "dynamodb://batches", "AWS_LAMBDA_FUNCTION_NAME": "self"}
	load := func(extra map[string]string) (Config, error) {
		return LoadConfig(func(k string) string {
			if v, ok := extra[k]; ok {
				return v
			}
			return base[k]
		})
	}
	c, err := load(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Store: "dynamodb://batches", WorkerFunction: "self", PollWait: 5 * time.Second, Stalled: 10 * time.Second,
		MaxQueued: 1000, Retention: 12 * time.Hour, Grace: 10 * time.Minute, MaxBodyBytes: 16 << 20, Lease: 30 * time.Second,
		FunctionTimeout: 5 * time.Minute, MaxAttempts: 3, Backoff: time.Second, LogFormat: "json", LogLevel: "info"}
	if c != want {
		t.Errorf("defaults\n%+v\nwant\n%+v", c, want)
	}
	c, err = load(map[string]string{"ASYNCFN_WORKER_FUNCTION": "worker", "ASYNCFN_SYNC_WAIT": "500ms", "ASYNCFN_POLL_WAIT": "0", "ASYNCFN_MAX_ATTEMPTS": "5", "ASYNCFN_LOG_LEVEL": "debug"})
	if err != nil || c.WorkerFunction != "worker" || c.SyncWait != 500*time.Millisecond || c.PollWait != 0 || c.MaxAttempts != 5 || c.LogLevel != "debug" {
		t.Errorf("overrides: %+v, %v", c, err)
	}
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"ASYNCFN_STORE": ""}, "ASYNCFN_STORE is not set"},
		{map[string]string{"ASYNCFN_STORE": "asyncfn.db"}, "DynamoDB table"},
		{map[string]string{"AWS_LAMBDA_FUNCTION_NAME": ""}, "ASYNCFN_WORKER_FUNCTION"},
		{map[string]string{"ASYNCFN_POLL_WAIT": "5"}, `ASYNCFN_POLL_WAIT="5"`},
		{map[string]string{"ASYNCFN_STALLED": "0s"}, "ASYNCFN_STALLED"},
		{map[string]string{"ASYNCFN_MAX_QUEUED": "-1"}, "ASYNCFN_MAX_QUEUED"},
		{map[string]string{"ASYNCFN_LOG_FORMAT": "xml"}, "ASYNCFN_LOG_FORMAT"},
		{map[string]string{"ASYNCFN_LOG_LEVEL": "loud"}, "ASYNCFN_LOG_LEVEL"},
		{map[string]string{"ASYNCFN_COMPREHEND": "yes"}, `ASYNCFN_COMPREHEND="yes": use true or false`},
		{map[string]string{"ASYNCFN_COMPREHEND": "true", "ASYNCFN_COMPREHEND_LANGUAGE": "xx"}, `ASYNCFN_COMPREHEND_LANGUAGE "xx": Amazon Comprehend detects sentiment in en,`},
		{map[string]string{"ASYNCFN_COMPREHEND": "true", "ASYNCFN_COMPREHEND_CONCURRENCY": "0"}, `ASYNCFN_COMPREHEND_CONCURRENCY="0": use a positive whole number`},
		{map[string]string{"ASYNCFN_COMPREHEND": "true", "ASYNCFN_COMPREHEND_LONG_TEXT": "cut"}, `ASYNCFN_COMPREHEND_LONG_TEXT "cut": use truncate, fail or null`},
		{map[string]string{"ASYNCFN_COMPREHEND": "true", "ASYNCFN_COMPREHEND_LABEL": "y"}, `ASYNCFN_COMPREHEND_LABEL="y": use true or false`},
		{map[string]string{"ASYNCFN_COMPREHEND": "true", "ASYNCFN_COMPREHEND_CALL_TIMEOUT": "5"}, `ASYNCFN_COMPREHEND_CALL_TIMEOUT="5"`},
	} {
		if _, err := load(tc.env); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %s", tc.env, err, tc.want)
		}
	}
}

// TestComprehendConfig: ASYNCFN_COMPREHEND turns the function on, with its settings from
// the variables of serve's --comprehend-* flags and the defaults of the others.
func TestComprehendConfig(t *testing.T) {
	base := map[string]string{"ASYNCFN_STORE": "dynamodb://batches", "AWS_LAMBDA_FUNCTION_NAME": "self"}
	for _, off := range []string{"", "false", "0"} {
		base["ASYNCFN_COMPREHEND"] = off
		if c, err := LoadConfig(func(k string) string { return base[k] }); err != nil || c.Comprehend != nil {
			t.Errorf("ASYNCFN_COMPREHEND=%q: %+v, %v; want off", off, c.Comprehend, err)
		}
	}
	env := map[string]string{"ASYNCFN_COMPREHEND": "true", "ASYNCFN_COMPREHEND_LANGUAGE": "de", "ASYNCFN_COMPREHEND_CONCURRENCY": "8",
		"ASYNCFN_COMPREHEND_LABEL": "true", "ASYNCFN_COMPREHEND_ROW_ERRORS": "null", "ASYNCFN_COMPREHEND_MAX_BACKOFF": "5s"}
	c, err := LoadConfig(func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		return base[k]
	})
	want := comprehend.DefaultConfig()
	want.Language, want.Concurrency, want.Label, want.RowErrors, want.MaxBackoff = "de", 8, true, comprehend.Null, 5*time.Second
	if err != nil || c.Comprehend == nil || *c.Comprehend != want {
		t.Errorf("%+v, %v\nwant %+v", c.Comprehend, err, want)
	}
}

// TestComprehendOnLambda: with ASYNCFN_COMPREHEND the Lambda serves /comprehend, its worker
// invocation calling Comprehend.
func TestComprehendOnLambda(t *testing.T) {
	fake := comprehendtest.New(t, nil)
	s := newStackEnv(t, map[string]string{"ASYNCFN_COMPREHEND": "true", "ASYNCFN_COMPREHEND_ENDPOINT": fake.URL}, shippedFunctions()...)
	header := batchHeader("q1:1:1:0:c")
	kind := eventKinds[0]
	if a := invoke(t, s.h, kind.build("POST", "/comprehend", header, []byte(`{"data":[[0,"I love it"],[1,null]]}`))); a.status != http.StatusAccepted {
		t.Fatalf("POST: %d %s", a.status, a.body)
	}
	a := invoke(t, s.h, kind.build("GET", "/comprehend", header, nil))
	if want := `{"data":[[0,` + comprehendtest.ScoreRow + `],[1,null]]}`; a.status != http.StatusOK || a.body != want {
		t.Errorf("GET: %d %s, want 200 %s", a.status, a.body, want)
	}
	if got := fake.Requests(); len(got) != 1 || got[0].LanguageCode != "en" || len(got[0].TextList) != 1 || got[0].TextList[0] != "I love it" {
		t.Errorf("requests %q", got)
	}
}
