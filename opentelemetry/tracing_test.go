package opentelemetry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/asyncfn/asyncfn"
	asyncfnhttp "github.com/asyncfn/asyncfn/http"
	"github.com/asyncfn/asyncfn/memory"
	"github.com/asyncfn/asyncfn/opentelemetry"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// deployment is two processes over one store: a front end without workers behind a real
// HTTP server, and a worker process, each with its own Tracing and exporter.
type deployment struct {
	store                *memory.Store
	srv                  *httptest.Server
	front, worker        *asyncfn.Runtime
	frontSpans, runSpans *tracetest.InMemoryExporter
}

func newDeployment(t *testing.T) *deployment {
	t.Helper()
	d := &deployment{store: memory.New(), frontSpans: tracetest.NewInMemoryExporter(), runSpans: tracetest.NewInMemoryExporter()}
	reg, err := asyncfn.NewRegistry(asyncfn.Function{Name: "echo", Func: asyncfn.Echo})
	if err != nil {
		t.Fatal(err)
	}
	process := func(exporter *tracetest.InMemoryExporter, workers int) (*asyncfn.Runtime, *opentelemetry.Tracing) {
		tr, err := opentelemetry.NewWithExporter(exporter)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Shutdown(context.Background()) })
		cfg := asyncfn.DefaultRuntimeConfig()
		cfg.Workers, cfg.Observer = workers, tr.Observer()
		cfg.Service.SyncWait, cfg.Service.PollWait = 0, 0
		cfg.Pool.PollInterval = 5 * time.Millisecond // the memory store tells no other process
		rt, err := asyncfn.NewRuntime(d.store, reg, discard, cfg)
		if err != nil {
			t.Fatal(err)
		}
		rt.Start(t.Context())
		t.Cleanup(rt.Stop)
		return rt, tr
	}
	var frontTracing *opentelemetry.Tracing
	d.front, frontTracing = process(d.frontSpans, 0)
	d.worker, _ = process(d.runSpans, 1)
	d.srv = httptest.NewServer(frontTracing.HTTP()(asyncfnhttp.NewHandler(d.front.Service(), discard, asyncfnhttp.Config{})))
	t.Cleanup(d.srv.Close)
	return d
}

// send sends a request as Snowflake does and returns its status and body.
func send(t *testing.T, h http.Handler, method, path, body string, header map[string]string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v) // canonical, as the server reads them off the wire
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code, w.Body.String()
}

// do sends a request over HTTP.
func (d *deployment) do(t *testing.T, method, body string, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, d.srv.URL+"/echo", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = []string{v}
	}
	resp, err := d.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// run POSTs a batch with header and polls it until it is answered 200, then stops both
// processes (so that every span has ended) and returns the spans by name.
func (d *deployment) run(t *testing.T, header map[string]string) map[string][]tracetest.SpanStub {
	t.Helper()
	const rows = `{"data":[[0,"a"],[1,"b"]]}`
	header[asyncfn.HeaderBatchID] = "batch-1"
	header[asyncfn.HeaderCurrentQueryID] = "query-1"
	if status, body := d.do(t, http.MethodPost, rows, header); status != http.StatusAccepted {
		t.Fatalf("POST: %d %s", status, body)
	}
	poll := map[string]string{asyncfn.HeaderBatchID: "batch-1", asyncfn.HeaderCurrentQueryID: "query-1"}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		status, body := d.do(t, http.MethodGet, "", poll)
		if status == http.StatusOK {
			if body != rows {
				t.Fatalf("result %s, want %s", body, rows)
			}
			break
		}
		if status != http.StatusAccepted || time.Now().After(deadline) {
			t.Fatalf("GET: %d %s", status, body)
		}
	}
	d.srv.Close() // waits for the handlers, which end the request spans
	d.worker.Stop()
	d.front.Stop()
	spans := map[string][]tracetest.SpanStub{}
	for _, s := range append(d.frontSpans.GetSpans(), d.runSpans.GetSpans()...) {
		spans[s.Name] = append(spans[s.Name], s)
	}
	for _, name := range []string{opentelemetry.SpanAccept, opentelemetry.SpanQueueWait, opentelemetry.SpanRun} {
		if len(spans[name]) != 1 {
			t.Fatalf("%d %q spans, want 1; spans: %v", len(spans[name]), name, spans)
		}
	}
	if len(spans[opentelemetry.SpanPoll]) == 0 {
		t.Fatalf("no poll span; spans: %v", spans)
	}
	return spans
}

func attr(s tracetest.SpanStub, key attribute.Key) attribute.Value {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// TestBatchTrace: the accept and poll spans of the front end and the queue wait and run
// spans of the worker process make one trace, linked by the trace context stored with
// the batch, each naming the batch.
func TestBatchTrace(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	spans := d.run(t, map[string]string{})
	accept := spans[opentelemetry.SpanAccept][0]
	if accept.Parent.IsValid() {
		t.Errorf("accept has parent %v, want none (the POST had no trace context)", accept.Parent)
	}
	tid := accept.SpanContext.TraceID()
	for name, list := range spans {
		for _, s := range list {
			if s.SpanContext.TraceID() != tid {
				t.Errorf("%s: trace %s, want the accept's %s", name, s.SpanContext.TraceID(), tid)
			}
			if got := attr(s, opentelemetry.AttrBatchID).AsString(); got != "batch-1" {
				t.Errorf("%s: batch id %q, want batch-1", name, got)
			}
			if got := attr(s, opentelemetry.AttrFunction).AsString(); got != "echo" {
				t.Errorf("%s: function %q, want echo", name, got)
			}
			if s.EndTime.Before(s.StartTime) {
				t.Errorf("%s: ends %v before it starts %v", name, s.EndTime, s.StartTime)
			}
			if got, _ := s.Resource.Set().Value("service.name"); got.AsString() != "asyncfn" {
				t.Errorf("%s: service.name %q, want asyncfn", name, got.AsString())
			}
		}
	}
	for _, name := range []string{opentelemetry.SpanQueueWait, opentelemetry.SpanRun} {
		s := spans[name][0]
		if s.Parent.SpanID() != accept.SpanContext.SpanID() || !s.Parent.IsRemote() {
			t.Errorf("%s: parent %v (remote %v), want the accept span %v", name, s.Parent.SpanID(), s.Parent.IsRemote(), accept.SpanContext.SpanID())
		}
		if got := attr(s, opentelemetry.AttrAttempt).AsInt64(); got != 1 {
			t.Errorf("%s: attempt %d, want 1", name, got)
		}
	}
	if got := attr(accept, "http.response.status_code").AsInt64(); got != http.StatusAccepted {
		t.Errorf("accept: status %d, want 202", got)
	}
	if got := attr(accept, opentelemetry.AttrQueryID).AsString(); got != "query-1" {
		t.Errorf("accept: query id %q, want query-1", got)
	}
	polls := spans[opentelemetry.SpanPoll]
	if got := attr(polls[len(polls)-1], "http.response.status_code").AsInt64(); got != http.StatusOK {
		t.Errorf("last poll: status %d, want 200", got)
	}
	run := spans[opentelemetry.SpanRun][0]
	if got := attr(run, opentelemetry.AttrOutcome).AsString(); got != string(asyncfn.OutcomeSucceeded) {
		t.Errorf("run: outcome %q, want succeeded", got)
	}
	if got := attr(run, opentelemetry.AttrRows).AsInt64(); got != 2 {
		t.Errorf("run: rows %d, want 2", got)
	}
	if wait := spans[opentelemetry.SpanQueueWait][0]; !wait.EndTime.Equal(run.StartTime) {
		t.Errorf("queue wait ends %v, run starts %v: want the same instant", wait.EndTime, run.StartTime)
	}
}

// TestIncomingTraceContext: a POST that carries a gateway's trace context joins its
// trace; the context stored with the batch is the accept span's, with the tracestate kept.
func TestIncomingTraceContext(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	spans := d.run(t, map[string]string{"traceparent": parent, "tracestate": "gw=1"})
	accept := spans[opentelemetry.SpanAccept][0]
	if got := accept.Parent.TraceID().String() + "/" + accept.Parent.SpanID().String(); got != "4bf92f3577b34da6a3ce929d0e0e4736/00f067aa0ba902b7" {
		t.Errorf("accept's parent %s, want the POST's traceparent", got)
	}
	for _, name := range []string{opentelemetry.SpanQueueWait, opentelemetry.SpanRun} {
		if s := spans[name][0]; s.Parent.SpanID() != accept.SpanContext.SpanID() || s.SpanContext.TraceID() != accept.Parent.TraceID() {
			t.Errorf("%s: parent %v in trace %v, want the accept span %v", name, s.Parent.SpanID(), s.SpanContext.TraceID(), accept.SpanContext.SpanID())
		}
	}
	b, err := d.store.Get(context.Background(), asyncfn.Key{Function: "echo", BatchID: "batch-1"}, time.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	want := "00-" + accept.SpanContext.TraceID().String() + "-" + accept.SpanContext.SpanID().String() + "-01"
	if b.Headers["traceparent"] != want || b.Headers["tracestate"] != "gw=1" {
		t.Errorf("stored trace context %q %q, want %q gw=1", b.Headers["traceparent"], b.Headers["tracestate"], want)
	}
}

// TestOff: a nil Tracing changes nothing, and tracing on changes no answer.
func TestOff(t *testing.T) {
	t.Parallel()
	var off *opentelemetry.Tracing
	if off.Observer() != nil {
		t.Errorf("nil Tracing has an observer")
	}
	if err := off.Shutdown(context.Background()); err != nil {
		t.Errorf("nil Tracing's Shutdown: %v", err)
	}
	exporter := tracetest.NewInMemoryExporter()
	on, err := opentelemetry.NewWithExporter(exporter)
	if err != nil {
		t.Fatal(err)
	}
	handler := func(tr *opentelemetry.Tracing) http.Handler {
		reg, err := asyncfn.NewRegistry(asyncfn.Function{Name: "echo", Func: asyncfn.Echo})
		if err != nil {
			t.Fatal(err)
		}
		cfg := asyncfn.DefaultRuntimeConfig()
		cfg.Workers, cfg.Observer = 0, tr.Observer()
		cfg.Service.SyncWait, cfg.Service.PollWait = 0, 0
		rt, err := asyncfn.NewRuntime(memory.New(), reg, discard, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return tr.HTTP()(asyncfnhttp.NewHandler(rt.Service(), discard, asyncfnhttp.Config{}))
	}
	plain, nilTraced, traced := handler(nil), handler(off), handler(on)
	batch := map[string]string{asyncfn.HeaderBatchID: "b", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	for _, r := range []struct {
		method, path, body string
		header             map[string]string
	}{
		{http.MethodPost, "/echo", `{"data":[[0,1]]}`, batch},
		{http.MethodGet, "/echo", "", batch},
		{http.MethodPost, "/echo", `{"data":[[0,2]]}`, batch}, // a different body: conflict
		{http.MethodPost, "/echo", `{"data":`, map[string]string{asyncfn.HeaderBatchID: "c"}},
		{http.MethodPost, "/nope", `{"data":[]}`, batch},
		{http.MethodPost, "/echo", `{"data":[]}`, nil},
		{http.MethodGet, "/healthz", "", nil},
		{http.MethodDelete, "/echo", "", batch},
	} {
		status, body := send(t, plain, r.method, r.path, r.body, r.header)
		for name, h := range map[string]http.Handler{"nil Tracing": nilTraced, "tracing on": traced} {
			if s, b := send(t, h, r.method, r.path, r.body, r.header); s != status || b != body {
				t.Errorf("%s %s with %s: %d %q, without tracing %d %q", r.method, r.path, name, s, b, status, body)
			}
		}
	}
	made := map[string]int{}
	for _, s := range exporter.GetSpans() {
		made[s.Name]++
	}
	if made[opentelemetry.SpanAccept] != 4 || made[opentelemetry.SpanPoll] != 1 || len(made) != 2 {
		t.Errorf("spans %v, want 4 accept (those with a batch id) and 1 poll", made)
	}
}

// TestRunAtOnce: a batch that a free worker of the front end runs at once, answered on
// its POST, has its queue wait and run spans under the accept span too.
func TestRunAtOnce(t *testing.T) {
	t.Parallel()
	exporter := tracetest.NewInMemoryExporter()
	tr, err := opentelemetry.NewWithExporter(exporter)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := asyncfn.NewRegistry(asyncfn.Function{Name: "echo", Func: asyncfn.Echo})
	if err != nil {
		t.Fatal(err)
	}
	cfg := asyncfn.DefaultRuntimeConfig()
	cfg.Workers, cfg.Observer = 1, tr.Observer()
	cfg.Service.SyncWait = time.Minute
	rt, err := asyncfn.NewRuntime(memory.New(), reg, discard, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rt.Start(t.Context())
	h := tr.HTTP()(asyncfnhttp.NewHandler(rt.Service(), discard, asyncfnhttp.Config{}))
	if status, body := send(t, h, http.MethodPost, "/echo", `{"data":[[0,1]]}`, map[string]string{asyncfn.HeaderBatchID: "b"}); status != http.StatusOK {
		t.Fatalf("POST: %d %s", status, body)
	}
	rt.Stop()
	spans := map[string]tracetest.SpanStub{}
	for _, s := range exporter.GetSpans() {
		spans[s.Name] = s
	}
	accept := spans[opentelemetry.SpanAccept]
	if len(spans) != 3 || !accept.SpanContext.IsValid() {
		t.Fatalf("spans %v, want accept, queue wait and run", spans)
	}
	for _, name := range []string{opentelemetry.SpanQueueWait, opentelemetry.SpanRun} {
		if s := spans[name]; s.Parent.SpanID() != accept.SpanContext.SpanID() || s.SpanContext.TraceID() != accept.SpanContext.TraceID() {
			t.Errorf("%s: parent %v in trace %v, want the accept span %v", name, s.Parent.SpanID(), s.SpanContext.TraceID(), accept.SpanContext.SpanID())
		}
	}
}

// TestRetriedRun: each attempt has its queue wait and run span; a retried attempt's run
// span carries its outcome and error.
func TestRetriedRun(t *testing.T) {
	t.Parallel()
	exporter := tracetest.NewInMemoryExporter()
	tr, err := opentelemetry.NewWithExporter(exporter)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	flaky := asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
		if calls.Add(1) == 1 {
			return nil, asyncfn.RetryableError(errors.New("busy"))
		}
		return asyncfn.Echo.Call(ctx, rows)
	})
	reg, err := asyncfn.NewRegistry(asyncfn.Function{Name: "echo", Func: flaky, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cfg := asyncfn.DefaultRuntimeConfig()
	cfg.Workers, cfg.Observer = 1, tr.Observer()
	cfg.Service.SyncWait, cfg.Service.PollWait = 0, 0
	cfg.Pool.PollInterval = 5 * time.Millisecond
	rt, err := asyncfn.NewRuntime(memory.New(), reg, discard, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rt.Start(t.Context())
	defer rt.Stop()
	h := tr.HTTP()(asyncfnhttp.NewHandler(rt.Service(), discard, asyncfnhttp.Config{}))
	batch := map[string]string{asyncfn.HeaderBatchID: "b"}
	send(t, h, http.MethodPost, "/echo", `{"data":[[0,1]]}`, batch)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		status, body := send(t, h, http.MethodGet, "/echo", "", batch)
		if status == http.StatusOK {
			break
		}
		if status != http.StatusAccepted || time.Now().After(deadline) {
			t.Fatalf("GET: %d %s", status, body)
		}
	}
	rt.Stop()
	var runs, waits []string
	for _, s := range exporter.GetSpans() {
		got := fmt.Sprintf("attempt %d", attr(s, opentelemetry.AttrAttempt).AsInt64())
		switch s.Name {
		case opentelemetry.SpanRun:
			runs = append(runs, fmt.Sprintf("%s %s %s %s %s", got, attr(s, opentelemetry.AttrOutcome).AsString(),
				attr(s, opentelemetry.AttrError).AsString(), s.Status.Code, s.Status.Description))
		case opentelemetry.SpanQueueWait:
			waits = append(waits, got)
		}
	}
	want := []string{"attempt 1 retried retryable Error busy", "attempt 2 succeeded  Unset "}
	if !slices.Equal(runs, want) || !slices.Equal(waits, []string{"attempt 1", "attempt 2"}) {
		t.Errorf("run spans %q, queue waits %q; want %q and attempts 1 and 2", runs, waits, want)
	}
}
