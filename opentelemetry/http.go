package opentelemetry

import (
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/asyncfn/asyncfn"
	asyncfnhttp "github.com/asyncfn/asyncfn/http"
)

// HTTP returns middleware for the service's handler (asyncfnhttp.NewHandler) that makes
// a span for each request to a function route: "accept" for a POST, "poll" for a GET.
// A request is a function's when it has Snowflake's batch id header and a one-segment
// path; health checks, metrics and the like are left alone. The span's parent is the
// request's own trace context (traceparent, tracestate) when it has one; if not, the
// span starts the batch's trace (see the package comment).
//
// Before the handler sees a POST, its traceparent and tracestate headers are replaced by
// the accept span's, so that the trace context stored with the batch is the accept span:
// the parent of the batch's queue wait and run spans in whichever process runs it.
func (t *Tracing) HTTP() func(http.Handler) http.Handler {
	if t == nil {
		return func(next http.Handler) http.Handler { return next }
	}
	return func(next http.Handler) http.Handler {
		// ObserveRequests captures the final status, and calls endRequest after it.
		observed := asyncfnhttp.ObserveRequests(endRequest)(next)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			name, key, ok := functionRequest(r)
			if !ok {
				next.ServeHTTP(w, r)
				return
			}
			ctx := t.propagator.Extract(withBatchTrace(r.Context(), key), propagation.HeaderCarrier(r.Header))
			ctx, _ = t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
				attribute.String("http.request.method", r.Method),
				attribute.String("http.route", "/{function}"),
				AttrFunction.String(key.Function), AttrBatchID.String(key.BatchID), AttrQueryID.String(queryID(r.Header)),
			))
			r = r.WithContext(ctx)
			if name == SpanAccept {
				r.Header = r.Header.Clone() // the handler must not change the caller's request
				r.Header.Del("traceparent")
				r.Header.Del("tracestate")
				t.propagator.Inject(ctx, propagation.HeaderCarrier(r.Header))
			}
			observed.ServeHTTP(w, r)
		})
	}
}

// functionRequest returns the span name and batch key of a request to a function route.
func functionRequest(r *http.Request) (name string, key asyncfn.Key, ok bool) {
	switch r.Method {
	case http.MethodPost:
		name = SpanAccept
	case http.MethodGet:
		name = SpanPoll
	default:
		return "", key, false
	}
	key = asyncfn.Key{Function: strings.TrimPrefix(r.URL.Path, "/"), BatchID: r.Header.Get(asyncfn.HeaderBatchID)}
	if key.Function == "" || key.BatchID == "" || strings.Contains(key.Function, "/") {
		return "", key, false
	}
	return name, key, true
}

// queryID is the request's query id, as the handler reads it.
func queryID(h http.Header) string {
	if id := h.Get(asyncfn.HeaderCurrentQueryID); id != "" {
		return id
	}
	return h.Get(asyncfn.HeaderQueryID)
}

// endRequest ends the request's span with its status: an error for a 5xx (a 4xx is the
// caller's, by the semantic conventions for server spans).
func endRequest(r *http.Request, status int, _ time.Duration) {
	span := trace.SpanFromContext(r.Context())
	span.SetAttributes(attribute.Int("http.response.status_code", status))
	if status >= http.StatusInternalServerError {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	span.End()
}
