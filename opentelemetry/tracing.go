// Package opentelemetry traces batches with OpenTelemetry: a span for each POST (accept)
// and GET (poll) of a function route, for the wait of each attempt in the queue (queue
// wait) and for the attempt itself (run), exported over OTLP/HTTP. It is an add-on: HTTP
// middleware and an asyncfn.Observer, with nothing in the core.
//
// The spans of one batch link across processes in two ways. The accept span's trace
// context replaces the POST's traceparent and tracestate headers before the handler sees
// them, so it is stored with the batch (asyncfn.KeepHeader) and the worker that claims the
// batch, in any process, makes its spans children of the accept span. And a span that has
// no parent (a POST without trace context, a poll, a batch stored untraced) takes a trace
// id derived from its function and batch id, so that the accept, every poll and every
// attempt of a batch share one trace without any process asking another.
package opentelemetry

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/asyncfn/asyncfn"
)

// DefaultServiceName is the service.name of the spans unless OTEL_SERVICE_NAME (or
// service.name in OTEL_RESOURCE_ATTRIBUTES) names another.
const DefaultServiceName = "asyncfn"

// Tracing makes the spans. A nil *Tracing is tracing off: its methods return
// pass-through middleware and no observer, at no cost per request.
type Tracing struct {
	provider   *sdktrace.TracerProvider
	tracer     trace.Tracer
	propagator propagation.TraceContext
	runs       runs
}

// Setup returns the process's Tracing as the standard OpenTelemetry environment
// variables ask, read with getenv (os.Getenv in a binary), or nil when they do not ask
// for it. Tracing is off by default, unlike the specification's default exporter, so that
// a deployment that knows nothing of OpenTelemetry sends nothing anywhere. It is on when
// OTEL_TRACES_EXPORTER is "otlp", or when it is unset and OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; OTEL_SDK_DISABLED=true or
// OTEL_TRACES_EXPORTER=none turns it off whatever else is set. Only the OTLP/HTTP
// exporter is built in: another OTEL_TRACES_EXPORTER, or an OTEL_EXPORTER_OTLP_PROTOCOL
// or OTEL_EXPORTER_OTLP_TRACES_PROTOCOL other than http/protobuf, is an error naming the
// variable.
//
// Once on, the OpenTelemetry SDK reads the rest from the process environment itself:
// the exporter OTEL_EXPORTER_OTLP_[TRACES_]{ENDPOINT,HEADERS,TIMEOUT,COMPRESSION,
// CERTIFICATE,CLIENT_CERTIFICATE,CLIENT_KEY,INSECURE} (endpoint default
// http://localhost:4318), the sampler OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG
// (default parentbased_always_on), the batching OTEL_BSP_*, the span limits
// OTEL_SPAN_*_LIMIT, and the resource OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
//
// Call Shutdown before the process exits, to send the spans still buffered.
func Setup(ctx context.Context, getenv func(string) string) (*Tracing, error) {
	on, err := enabled(getenv)
	if !on || err != nil {
		return nil, err
	}
	exporter, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	return newTracing(ctx, sdktrace.WithBatcher(exporter))
}

// enabled reports whether the variables ask for traces, or which one is wrong.
func enabled(getenv func(string) string) (bool, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, nil
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := strings.TrimSpace(getenv(name)); p != "" && p != "http/protobuf" {
			return false, fmt.Errorf("%s=%q: only http/protobuf is supported", name, p)
		}
	}
	switch e := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); e {
	case "otlp":
		return true, nil
	case "none":
		return false, nil
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
	default:
		return false, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: only otlp and none are supported", e)
	}
}

// NewWithExporter returns a Tracing that hands each span to exporter as it ends, without
// batching: for tests, with the SDK's in-memory exporter (tracetest.NewInMemoryExporter).
func NewWithExporter(exporter sdktrace.SpanExporter) (*Tracing, error) {
	return newTracing(context.Background(), sdktrace.WithSyncer(exporter))
}

func newTracing(ctx context.Context, processor sdktrace.TracerProviderOption) (*Tracing, error) {
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", DefaultServiceName)),
		resource.WithFromEnv(), // later detectors win: OTEL_SERVICE_NAME overrides the default
		resource.WithTelemetrySDK(),
	)
	if err != nil {
		return nil, fmt.Errorf("OpenTelemetry resource: %w", err)
	}
	provider := sdktrace.NewTracerProvider(processor, sdktrace.WithResource(res), sdktrace.WithIDGenerator(batchIDs{}))
	return &Tracing{provider: provider, tracer: provider.Tracer("github.com/asyncfn/asyncfn/opentelemetry")}, nil
}

// Shutdown ends tracing: it sends the spans still buffered, within ctx. Nil-safe.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// Span names.
const (
	SpanAccept    = "accept"
	SpanPoll      = "poll"
	SpanQueueWait = "queue wait"
	SpanRun       = "run"
)

// Span attributes of asyncfn's own (the HTTP ones are OpenTelemetry's semantic
// conventions: http.request.method, http.route, http.response.status_code).
const (
	AttrFunction = attribute.Key("asyncfn.function")
	AttrBatchID  = attribute.Key("asyncfn.batch_id")
	AttrQueryID  = attribute.Key("asyncfn.query_id")
	AttrRows     = attribute.Key("asyncfn.rows")
	AttrAttempt  = attribute.Key("asyncfn.attempt")
	AttrOutcome  = attribute.Key("asyncfn.outcome")
	AttrError    = attribute.Key("asyncfn.error.kind")
)

// batchIDs generates random span ids, and random trace ids except for a span started
// with a context from withBatchTrace, which takes its batch's trace id.
type batchIDs struct{}

type batchTraceKey struct{}

// withBatchTrace returns ctx under which a span without a parent starts the trace of the
// batch key: its trace id is the first 16 bytes of SHA-256(function NUL batch id).
func withBatchTrace(ctx context.Context, key asyncfn.Key) context.Context {
	sum := sha256.Sum256([]byte(key.Function + "\x00" + key.BatchID))
	return context.WithValue(ctx, batchTraceKey{}, trace.TraceID(sum[:16]))
}

func (batchIDs) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	tid, ok := ctx.Value(batchTraceKey{}).(trace.TraceID)
	for !ok || !tid.IsValid() {
		binary.NativeEndian.PutUint64(tid[:8], rand.Uint64())
		binary.NativeEndian.PutUint64(tid[8:], rand.Uint64())
		ok = true
	}
	return tid, batchIDs{}.NewSpanID(ctx, tid)
}

func (batchIDs) NewSpanID(context.Context, trace.TraceID) trace.SpanID {
	var sid trace.SpanID
	for !sid.IsValid() {
		binary.NativeEndian.PutUint64(sid[:], rand.Uint64())
	}
	return sid
}
