package http_test

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	asyncfnhttp "github.com/asyncfn/asyncfn/http"
	"github.com/asyncfn/asyncfn/memory"
)

var discard = slog.New(slog.DiscardHandler)

// front is a front end (no workers) over a memory store behind a real HTTP server.
type front struct {
	t     *testing.T
	store *memory.Store
	srv   *httptest.Server
}

func newFront(t *testing.T, svcCfg func(*asyncfn.ServiceConfig), cfg asyncfnhttp.Config) *front {
	t.Helper()
	reg, err := asyncfn.NewRegistry(
		asyncfn.Function{Name: "echo", Func: asyncfn.Echo},
		asyncfn.Function{Name: "other", Func: asyncfn.Echo},
	)
	if err != nil {
		t.Fatal(err)
	}
	store := memory.New()
	rc := asyncfn.DefaultRuntimeConfig()
	rc.Workers = 0
	rc.Service.SyncWait, rc.Service.PollWait = 0, 0
	if svcCfg != nil {
		svcCfg(&rc.Service)
	}
	rt, err := asyncfn.NewRuntime(store, reg, discard, rc)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(asyncfnhttp.NewHandler(rt.Service(), discard, cfg))
	t.Cleanup(srv.Close)
	return &front{t: t, store: store, srv: srv}
}

type reply struct {
	status int
	header http.Header
	body   string
}

// do sends a request as Snowflake does: lower-case sf- headers, JSON content type.
func (f *front) do(method, path string, body io.Reader, header map[string]string) reply {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, body)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header["user-agent"] = []string{"snowflake/1.0"}
	req.Header["content-type"] = []string{"application/json"}
	for k, v := range header {
		req.Header[k] = []string{v} // as given: lower-case on the wire
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, string(b)}
}

func (f *front) post(fn, id, body string, header map[string]string) reply {
	f.t.Helper()
	h := map[string]string{"sf-external-function-query-batch-id": id}
	for k, v := range header {
		h[k] = v
	}
	return f.do(http.MethodPost, "/"+fn, strings.NewReader(body), h)
}

func (f *front) get(fn, id string) reply {
	f.t.Helper()
	return f.do(http.MethodGet, "/"+fn, nil, map[string]string{"sf-external-function-query-batch-id": id})
}

// checkErrorBody fails unless r is an error answer whose body is one sentence.
func checkErrorBody(t *testing.T, r reply) {
	t.Helper()
	if r.status >= 500 {
		t.Errorf("status %d: a 5xx makes Snowflake retry a request that cannot succeed", r.status)
	}
	if !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Errorf("error Content-Type = %q, want text/plain", r.header.Get("Content-Type"))
	}
	if r.body == "" || strings.ContainsAny(r.body, "\r\n") || !strings.HasSuffix(r.body, ".") {
		t.Errorf("error body %q is not one sentence on one line ending with '.'", r.body)
	}
}

func gzipped(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zlibbed(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw := zlib.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func deflated(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := flate.NewWriter(&buf, flate.BestCompression)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// chunked hides a reader's length so that the client sends it chunked.
type chunked struct{ io.Reader }

func TestBadRequests(t *testing.T) {
	t.Parallel()
	const max = 4096
	f := newFront(t, nil, asyncfnhttp.Config{MaxBodyBytes: max})
	good := `{"data":[[0,"a"]]}`
	over := `{"data":[[0,"` + strings.Repeat("x", max) + `"]]}`
	bomb := gzipped(t, []byte(`{"data":[[0,"`+strings.Repeat(" ", 1<<20)+`"]]}`))
	if len(bomb) >= max {
		t.Fatalf("the gzip bomb is %d bytes compressed; it must fit the limit", len(bomb))
	}
	id := func(s string) map[string]string { return map[string]string{"sf-external-function-query-batch-id": s} }
	gz := func(enc string) map[string]string {
		return map[string]string{"sf-external-function-query-batch-id": "enc-" + enc, "content-encoding": enc}
	}
	for _, tc := range []struct {
		name   string
		method string
		path   string
		body   io.Reader
		header map[string]string
		status int
		want   string
	}{
		{"no batch id", "POST", "/echo", strings.NewReader(good), nil, 400, "sf-external-function-query-batch-id header"},
		{"no batch id GET", "GET", "/echo", nil, nil, 400, "sf-external-function-query-batch-id header"},
		{"batch id too long", "POST", "/echo", strings.NewReader(good), id(strings.Repeat("x", 1025)), 400, "over 1024 bytes"},
		{"not JSON", "POST", "/echo", strings.NewReader(`{"data": [[0,`), id("1"), 400, "not valid JSON"},
		{"empty body", "POST", "/echo", strings.NewReader(``), id("2"), 400, "not valid JSON"},
		{"no data", "POST", "/echo", strings.NewReader(`{"rows": []}`), id("3"), 400, `no "data"`},
		{"data not array", "POST", "/echo", strings.NewReader(`{"data": 1}`), id("4"), 400, `"data" is not an array`},
		{"row not array", "POST", "/echo", strings.NewReader(`{"data": [[0, 1], "x"]}`), id("5"), 400, "row 1 of the request is not an array"},
		{"rows out of order", "POST", "/echo", strings.NewReader(`{"data": [[1, 1], [0, 2]]}`), id("6"), 400, "numbered 1"},
		{"rows not from 0", "POST", "/echo", strings.NewReader(`{"data": [[1, 1]]}`), id("7"), 400, "numbered 1"},
		{"too large", "POST", "/echo", strings.NewReader(over), id("8"), 413, "limit of 4 KB"},
		{"too large chunked", "POST", "/echo", chunked{strings.NewReader(over)}, id("9"), 413, "limit of 4 KB"},
		{"gzip bomb", "POST", "/echo", bytes.NewReader(bomb), gz("gzip"), 413, "limit of 4 KB"},
		{"deflate bomb", "POST", "/echo", bytes.NewReader(zlibbed(t, []byte(strings.Repeat(" ", 1<<20)))), gz("deflate"), 413, "limit of 4 KB"},
		{"bad gzip", "POST", "/echo", strings.NewReader(good), gz("gzip"), 400, "not valid gzip data"},
		{"truncated gzip", "POST", "/echo", bytes.NewReader(gzipped(t, []byte(good))[:15]), gz("x-gzip"), 400, "is not valid x-gzip data: unexpected EOF"},
		{"bad deflate", "POST", "/echo", strings.NewReader("\xff\xff\xff\xff"), gz("deflate"), 400, "flate: corrupt input"},
		{"empty deflate", "POST", "/echo", strings.NewReader(""), gz("deflate"), 400, "not valid deflate data"},
		{"gzip of not JSON", "POST", "/echo", bytes.NewReader(gzipped(t, []byte("nope"))), gz("GZIP"), 400, "not valid JSON"},
		{"brotli", "POST", "/echo", strings.NewReader(good), gz("br"), 415, `Content-Encoding "br" is not supported`},
		{"two encodings", "POST", "/echo", strings.NewReader(good), gz("gzip, gzip"), 415, "not supported"},
		{"unknown function", "POST", "/nope", strings.NewReader(good), id("10"), 404, "no function is served at /nope; this service serves /echo, /other."},
		{"unknown route", "GET", "/echo/x", nil, id("11"), 404, "no function is served at /echo/x"},
		{"root", "GET", "/", nil, id("12"), 404, "no function is served at /;"},
		{"newline in route", "GET", "/a%0Ab", nil, id("13"), 404, "no function is served"},
		{"wrong method", "PUT", "/echo", strings.NewReader(good), id("14"), 405, "method PUT is not allowed"},
		{"DELETE", "DELETE", "/echo", nil, id("15"), 405, "method DELETE is not allowed"},
		{"unknown batch", "GET", "/echo", nil, id("never-sent"), 404, "batch never-sent of function echo is unknown or has expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(tc.method, tc.path, tc.body, tc.header)
			if r.status != tc.status || !strings.Contains(r.body, tc.want) {
				t.Errorf("%s %s = %d %q, want %d containing %q", tc.method, tc.path, r.status, r.body, tc.status, tc.want)
			}
			checkErrorBody(t, r)
			if tc.status == 405 && r.header.Get("Allow") != "GET, POST" {
				t.Errorf("Allow = %q", r.header.Get("Allow"))
			}
		})
	}
	// Nothing bad was stored; good input still works.
	if st, _ := f.store.Stats(context.Background(), time.Now()); st != (asyncfn.Stats{}) {
		t.Errorf("bad requests stored batches: %+v", st)
	}
	if r := f.post("echo", "good", good, nil); r.status != 202 || r.body != `{"state":"queued"}` {
		t.Errorf("good POST after bad ones = %d %s", r.status, r.body)
	}
}

func TestEncodings(t *testing.T) {
	t.Parallel()
	f := newFront(t, nil, asyncfnhttp.Config{MaxBodyBytes: 64})
	body := []byte(`{"data":[[0,"` + strings.Repeat("a", 40) + `"]]}`) // 58 bytes: at the limit once decoded
	for _, tc := range []struct {
		enc  string
		body []byte
	}{
		{"", body},
		{"identity", body},
		{"gzip", gzipped(t, body)},
		{"x-gzip", gzipped(t, body)},
		{" Gzip ", gzipped(t, body)},
		{"deflate", zlibbed(t, body)},
		{"deflate", deflated(t, body)}, // raw deflate, as some clients send it
	} {
		id := fmt.Sprintf("%q-%x", tc.enc, tc.body[:2])
		r := f.do("POST", "/echo", bytes.NewReader(tc.body), map[string]string{"sf-external-function-query-batch-id": id, "content-encoding": tc.enc})
		if r.status != 202 {
			t.Errorf("Content-Encoding %q: %d %q", tc.enc, r.status, r.body)
			continue
		}
		b, err := f.store.Get(context.Background(), asyncfn.Key{Function: "echo", BatchID: id}, time.Now(), true)
		if err != nil || !bytes.Equal(b.Payload, body) {
			t.Errorf("Content-Encoding %q: stored %q, %v; want the decoded body", tc.enc, b.Payload, err)
		}
	}
	// At the limit, decoded, passes; a byte over does not.
	exact := []byte(`{"data":[[0,"` + strings.Repeat("a", 64-17) + `"]]}`)
	if r := f.post("echo", "exact", string(exact), nil); len(exact) != 64 || r.status != 202 {
		t.Errorf("a body of exactly the limit: %d %q", r.status, r.body)
	}
	overBy1 := append(exact[:len(exact):len(exact)], ' ')
	if r := f.do("POST", "/echo", bytes.NewReader(gzipped(t, overBy1)), map[string]string{"sf-external-function-query-batch-id": "over", "content-encoding": "gzip"}); r.status != 413 {
		t.Errorf("a gzip body one byte over the limit once decoded: %d %q", r.status, r.body)
	}
}

func TestHeadersCaseInsensitive(t *testing.T) {
	t.Parallel()
	f := newFront(t, nil, asyncfnhttp.Config{})
	for i, name := range []string{"sf-external-function-query-batch-id", "SF-EXTERNAL-FUNCTION-QUERY-BATCH-ID", asyncfn.HeaderBatchID} {
		id := fmt.Sprint("case-", i)
		r := f.do("POST", "/echo", strings.NewReader(`{"data":[[0,1]]}`), map[string]string{name: id})
		if r.status != 202 {
			t.Errorf("header %s: %d %q", name, r.status, r.body)
		}
	}
	// The query id for logs: current-query-id, else query-id.
	f.post("echo", "q1", `{"data":[[0,1]]}`, map[string]string{"sf-external-function-current-query-id": "cur", "sf-external-function-query-id": "q"})
	f.post("echo", "q2", `{"data":[[0,1]]}`, map[string]string{"sf-external-function-query-id": "q"})
	for id, want := range map[string]string{"q1": "cur", "q2": "q"} {
		b, err := f.store.Get(context.Background(), asyncfn.Key{Function: "echo", BatchID: id}, time.Now(), false)
		if err != nil || b.QueryID != want {
			t.Errorf("batch %s: query id %+v, %v; want %q", id, b, err, want)
		}
	}
}

// TestFunctionsAreSeparate: one batch id sent to two functions is two batches.
func TestFunctionsAreSeparate(t *testing.T) {
	t.Parallel()
	f := newFront(t, nil, asyncfnhttp.Config{})
	if r := f.post("echo", "same", `{"data":[[0,1]]}`, nil); r.status != 202 {
		t.Fatalf("POST echo = %d %q", r.status, r.body)
	}
	if r := f.post("other", "same", `{"data":[[0,2]]}`, nil); r.status != 202 {
		t.Errorf("POST other with the same id and another body = %d %q, want 202", r.status, r.body)
	}
	if r := f.post("echo", "same", `{"data":[[0,2]]}`, nil); r.status != 409 || !strings.Contains(r.body, "different body") {
		t.Errorf("POST echo with another body = %d %q, want 409", r.status, r.body)
	} else {
		checkErrorBody(t, r)
	}
}

// TestFinishedStatuses: a batch's outcome maps to 200, 400 or 422 on both POST and GET.
func TestFinishedStatuses(t *testing.T) {
	t.Parallel()
	f := newFront(t, nil, asyncfnhttp.Config{})
	ctx := context.Background()
	outcomes := map[string]asyncfn.FinishParams{
		"ok":       asyncfn.Succeed(time.Time{}, []byte(`{"data":[[0,"r"]]}`)),
		"invalid":  asyncfn.Fail(time.Time{}, &asyncfn.Error{Kind: asyncfn.InvalidInput, Message: "row 0: not a date."}),
		"internal": asyncfn.Fail(time.Time{}, &asyncfn.Error{Kind: asyncfn.Internal, Message: "the function f panicked: x."}),
	}
	for id := range outcomes {
		if r := f.post("echo", id, `{"data":[[0,1]]}`, nil); r.status != 202 {
			t.Fatalf("POST = %d", r.status)
		}
	}
	if r := f.get("echo", "ok"); r.status != 202 || r.body != `{"state":"queued"}` {
		t.Errorf("GET of a queued batch = %d %s", r.status, r.body)
	}
	claimed, err := f.store.Claim(ctx, asyncfn.ClaimParams{Owner: "w", Now: time.Now(), Lease: time.Minute, Limit: 10})
	if err != nil || len(claimed) != 3 {
		t.Fatalf("Claim = %d, %v", len(claimed), err)
	}
	if r := f.get("echo", "ok"); r.status != 202 || r.body != `{"state":"running"}` {
		t.Errorf("GET of a running batch = %d %s", r.status, r.body)
	}
	for id, p := range outcomes {
		p.Now = time.Now()
		if err := f.store.Finish(ctx, asyncfn.Key{Function: "echo", BatchID: id}, "w", p); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		id     string
		status int
		body   string
	}{
		{"ok", 200, `{"data":[[0,"r"]]}`},
		{"invalid", 400, "row 0: not a date."},
		{"internal", 422, "the function f panicked: x."},
	} {
		for _, r := range []reply{f.get("echo", tc.id), f.post("echo", tc.id, `{"data":[[0,1]]}`, nil)} {
			if r.status != tc.status || r.body != tc.body {
				t.Errorf("batch %s: %d %q, want %d %q", tc.id, r.status, r.body, tc.status, tc.body)
			}
			if tc.status == 200 && r.header.Get("Content-Type") != "application/json" {
				t.Errorf("200 Content-Type = %q", r.header.Get("Content-Type"))
			}
		}
	}
}

func TestOverloaded(t *testing.T) {
	t.Parallel()
	f := newFront(t, func(c *asyncfn.ServiceConfig) { c.MaxQueued = 1 }, asyncfnhttp.Config{})
	if r := f.post("echo", "1", `{"data":[[0,1]]}`, nil); r.status != 202 {
		t.Fatalf("first POST = %d", r.status)
	}
	r := f.post("echo", "2", `{"data":[[0,1]]}`, nil)
	if r.status != 429 || r.header.Get("Retry-After") == "" {
		t.Errorf("POST past max-queued = %d (Retry-After %q) %q", r.status, r.header.Get("Retry-After"), r.body)
	}
	checkErrorBody(t, r)
	if r := f.post("echo", "1", `{"data":[[0,1]]}`, nil); r.status != 202 {
		t.Errorf("retried POST of an accepted batch under overload = %d %q", r.status, r.body)
	}
}

func TestStoreUnavailable(t *testing.T) {
	t.Parallel()
	f := newFront(t, nil, asyncfnhttp.Config{})
	if r := f.do("GET", "/healthz", nil, nil); r.status != 200 {
		t.Errorf("/healthz = %d", r.status)
	}
	if r := f.do("GET", "/readyz", nil, nil); r.status != 200 {
		t.Errorf("/readyz = %d", r.status)
	}
	f.store.Close()
	if r := f.do("GET", "/healthz", nil, nil); r.status != 200 {
		t.Errorf("/healthz with the store closed = %d, want 200 (the process answers)", r.status)
	}
	if r := f.do("GET", "/readyz", nil, nil); r.status != 503 {
		t.Errorf("/readyz with the store closed = %d, want 503", r.status)
	}
	// Snowflake retries 503: the right answer while the store is away.
	for _, r := range []reply{f.post("echo", "1", `{"data":[[0,1]]}`, nil), f.get("echo", "1")} {
		if r.status != 503 || !strings.Contains(r.body, "Snowflake will retry") {
			t.Errorf("with the store closed: %d %q, want 503", r.status, r.body)
		}
	}
}

func TestRecoverAndRoutes(t *testing.T) {
	t.Parallel()
	reg, _ := asyncfn.NewRegistry(asyncfn.Function{Name: "echo", Func: asyncfn.Echo})
	rt, _ := asyncfn.NewRuntime(memory.New(), reg, discard, asyncfn.DefaultRuntimeConfig())
	svc := rt.Service()
	h := asyncfnhttp.NewHandler(svc, discard, asyncfnhttp.Config{Routes: map[string]http.Handler{
		"GET /boom":  http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }),
		"GET /extra": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "extra") }),
	}})
	srv := httptest.NewServer(h)
	defer srv.Close()
	for path, want := range map[string]string{"/boom": "500 the service failed with an internal error; see its log.", "/extra": "200 extra", "/healthz": "200 ok"} {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := fmt.Sprint(resp.StatusCode, " ", string(b)); got != want {
			t.Errorf("GET %s = %s, want %s", path, got, want)
		}
	}
	reg2, _ := asyncfn.NewRegistry(asyncfn.Function{Name: "b", Func: asyncfn.Echo}, asyncfn.Function{Name: "a", Func: asyncfn.Echo})
	if got := asyncfnhttp.Routes(reg2); got != "/a, /b" {
		t.Errorf("Routes = %q", got)
	}

	hh := httptest.NewServer(asyncfnhttp.HealthHandler(memory.New(), discard))
	defer hh.Close()
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/echo": 404} {
		resp, err := hh.Client().Get(hh.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("HealthHandler GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
}

// TestSyncAnswer: with a worker, a quick batch is answered 200 on its POST within
// SyncWait, and the answer holds the rows in order.
func TestSyncAnswer(t *testing.T) {
	t.Parallel()
	reg, _ := asyncfn.NewRegistry(asyncfn.Function{Name: "echo", Func: asyncfn.Echo})
	store := memory.New()
	rc := asyncfn.DefaultRuntimeConfig()
	rc.Service.SyncWait = 10 * time.Second
	rt, err := asyncfn.NewRuntime(store, reg, discard, rc)
	if err != nil {
		t.Fatal(err)
	}
	rt.Start(context.Background())
	defer rt.Stop()
	srv := httptest.NewServer(asyncfnhttp.NewHandler(rt.Service(), discard, asyncfnhttp.Config{}))
	defer srv.Close()
	f := &front{t: t, store: store, srv: srv}
	var in strings.Builder
	in.WriteString(`{"data":[`)
	for i := range 100 {
		if i > 0 {
			in.WriteByte(',')
		}
		fmt.Fprintf(&in, `[%d,{"i":%d},"x"]`, i, i)
	}
	in.WriteString(`]}`)
	r := f.post("echo", "sync", in.String(), nil)
	if r.status != 200 {
		t.Fatalf("POST = %d %q", r.status, r.body)
	}
	var out struct{ Data [][]json.RawMessage }
	if err := json.Unmarshal([]byte(r.body), &out); err != nil || len(out.Data) != 100 {
		t.Fatalf("answer %q: %v", r.body, err)
	}
	for i, row := range out.Data {
		if len(row) != 2 || string(row[0]) != fmt.Sprint(i) || string(row[1]) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Errorf("row %d = %s", i, row)
		}
	}
}

// TestHealthMethods: the health endpoints answer GET, and other methods with 405 rather
// than as an unknown function.
func TestHealthMethods(t *testing.T) {
	t.Parallel()
	h := asyncfnhttp.HealthHandler(memory.New(), discard)
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/healthz", 200}, {"GET", "/readyz", 200}, {"HEAD", "/healthz", 200},
		{"POST", "/healthz", 405}, {"DELETE", "/readyz", 405},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.want || (tc.want == 405 && rec.Header().Get("Allow") != "GET, HEAD") {
			t.Errorf("%s %s = %d (Allow %q), want %d", tc.method, tc.path, rec.Code, rec.Header().Get("Allow"), tc.want)
		}
	}
}

// TestLongContextHeaderLeftOut: a header too long to keep with the batch (the text of a
// long statement, CONTEXT_HEADERS = (CURRENT_STATEMENT)) is left out, not refused: the
// request is Snowflake's own and the function may not need it.
func TestLongContextHeaderLeftOut(t *testing.T) {
	t.Parallel()
	f := newFront(t, nil, asyncfnhttp.Config{})
	stmt := "select ext_func(a) from t where a in (" + strings.Repeat("'value', ", 1000) + "'x')"
	r := f.do("POST", "/echo", strings.NewReader(`{"data":[[0,"a"]]}`), map[string]string{
		"sf-external-function-query-batch-id": "b1",
		"sf-context-current-statement":        stmt,
		"sf-custom-language":                  "fr",
	})
	if r.status != http.StatusAccepted {
		t.Fatalf("POST with a %d-byte context header = %d %q; want it accepted", len(stmt), r.status, r.body)
	}
	b, err := f.store.Get(context.Background(), asyncfn.Key{Function: "echo", BatchID: "b1"}, time.Now(), false)
	if err != nil || b.Headers["sf-custom-language"] != "fr" || b.Headers["sf-context-current-statement"] != "" {
		t.Errorf("stored headers %v, %v; want the short one kept and the long one left out", b.Headers, err)
	}
}
