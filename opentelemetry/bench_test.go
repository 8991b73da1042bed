package opentelemetry_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/asyncfn/asyncfn"
	asyncfnhttp "github.com/asyncfn/asyncfn/http"
	"github.com/asyncfn/asyncfn/memory"
	"github.com/asyncfn/asyncfn/opentelemetry"
)

// BenchmarkAccept is a POST of a 3-row batch run at once and answered 200, the
// cheapest request a function serves, with tracing off (nil Tracing) and on (all four
// spans made, handed to an exporter that drops them): the difference is tracing's cost.
func BenchmarkAccept(b *testing.B) {
	on, err := opentelemetry.NewWithExporter(tracetest.NewNoopExporter())
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		tr   *opentelemetry.Tracing
	}{{"off", nil}, {"on", on}} {
		b.Run(c.name, func(b *testing.B) {
			reg, err := asyncfn.NewRegistry(asyncfn.Function{Name: "echo", Func: asyncfn.Echo})
			if err != nil {
				b.Fatal(err)
			}
			cfg := asyncfn.DefaultRuntimeConfig()
			cfg.Workers, cfg.Observer = 2, c.tr.Observer()
			rt, err := asyncfn.NewRuntime(memory.New(), reg, discard, cfg)
			if err != nil {
				b.Fatal(err)
			}
			rt.Start(b.Context())
			defer rt.Stop()
			h := c.tr.HTTP()(asyncfnhttp.NewHandler(rt.Service(), discard, asyncfnhttp.Config{}))
			const body = `{"data":[[0,"a"],[1,"b"],[2,"c"]]}`
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				req := httptest.NewRequest(http.MethodPost, "/echo", strings.NewReader(body))
				req.Header.Set(asyncfn.HeaderBatchID, strconv.Itoa(i))
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("POST: %d %s", w.Code, w.Body)
				}
			}
		})
	}
}

// BenchmarkSpans is tracing's own cost per batch, without the service: a POST through
// the middleware to a handler that answers at once, then the observer told of its
// attempt; off (nil Tracing) is the cost of the request and recorder themselves.
func BenchmarkSpans(b *testing.B) {
	on, err := opentelemetry.NewWithExporter(tracetest.NewNoopExporter())
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		tr   *opentelemetry.Tracing
	}{{"off", nil}, {"on", on}} {
		b.Run(c.name, func(b *testing.B) {
			h := c.tr.HTTP()(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusAccepted)
			}))
			obs := asyncfn.Observers(c.tr.Observer())
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				id := strconv.Itoa(i)
				req := httptest.NewRequest(http.MethodPost, "/echo", nil)
				req.Header.Set(asyncfn.HeaderBatchID, id)
				h.ServeHTTP(httptest.NewRecorder(), req)
				info := asyncfn.RunInfo{Key: asyncfn.Key{Function: "echo", BatchID: id}, Rows: 3, Attempt: 1}
				obs.BatchStarted(info)
				info.Outcome = asyncfn.OutcomeSucceeded
				obs.BatchFinished(info)
			}
		})
	}
}
