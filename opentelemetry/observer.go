package opentelemetry

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/asyncfn/asyncfn"
)

// Observer returns the observer that makes a batch's "queue wait" and "run" spans in the
// process that runs it, children of the trace context stored with the batch (the accept
// span, with HTTP's middleware in the front end), for the runtime's config
// (asyncfn.RuntimeConfig.Observer, with asyncfn.Observers beside others). Nil when t is
// nil: no observer.
//
// "queue wait" ends when a worker claims the batch and began QueueWait earlier: when the
// batch was accepted, or when its backoff ended for a retry. "run" is the attempt: from
// the claim for the function's run time, with the attempt's outcome and error. It is
// made here rather than by function middleware because only the observer knows the batch
// id, the attempt and its recorded outcome (retried, lost, handed back), and it ends the
// span at the timeout even when the function ignores its context and runs on.
func (t *Tracing) Observer() asyncfn.Observer {
	if t == nil {
		return nil
	}
	return observer{t: t}
}

type observer struct {
	asyncfn.NopObserver // accepts and rejections are the HTTP spans'
	t                   *Tracing
}

// runs holds the run spans started and not yet finished, by batch and attempt.
type runs struct {
	m sync.Map // runKey -> runSpan
}

type runKey struct {
	key     asyncfn.Key
	attempt int
}

type runSpan struct {
	span  trace.Span
	began time.Time
}

func (o observer) BatchStarted(i asyncfn.RunInfo) {
	now := time.Now()
	ctx := o.t.propagator.Extract(withBatchTrace(context.Background(), i.Key), propagation.MapCarrier(i.Headers))
	attrs := trace.WithAttributes(AttrFunction.String(i.Key.Function), AttrBatchID.String(i.Key.BatchID),
		AttrQueryID.String(i.QueryID), AttrAttempt.Int(i.Attempt), AttrRows.Int(i.Rows))
	_, wait := o.t.tracer.Start(ctx, SpanQueueWait, attrs, trace.WithTimestamp(now.Add(-i.QueueWait)))
	wait.End(trace.WithTimestamp(now))
	_, run := o.t.tracer.Start(ctx, SpanRun, attrs, trace.WithTimestamp(now))
	o.t.runs.m.Store(runKey{i.Key, i.Attempt}, runSpan{run, now})
}

func (o observer) BatchFinished(i asyncfn.RunInfo) {
	v, ok := o.t.runs.m.LoadAndDelete(runKey{i.Key, i.Attempt})
	if !ok {
		return
	}
	run := v.(runSpan)
	run.span.SetAttributes(AttrOutcome.String(string(i.Outcome)))
	if i.Error != nil {
		run.span.SetAttributes(AttrError.String(string(i.Error.Kind)))
		run.span.SetStatus(codes.Error, i.Error.Message)
	}
	run.span.End(trace.WithTimestamp(run.began.Add(i.Run)))
}
