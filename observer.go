package asyncfn

import "time"

// Log attribute keys of a batch, the same in every package's log lines, so that one
// batch's or query's lines can be found together.
const (
	LogFunction = "function"
	LogBatchID  = "batch_id"
	LogQueryID  = "query_id"
)

// Observer is told what a Service and a Pool do, for metrics, status pages and traces,
// without the domain depending on any of them. Its methods are called synchronously on
// the hot path, from many goroutines at once: they must be safe for concurrent use, quick,
// and must not block or call back into the service. Embed NopObserver to implement only
// some methods (and keep compiling when methods are added).
type Observer interface {
	// BatchAccepted: a POST stored a new batch, or found it already stored (a retry).
	BatchAccepted(AcceptInfo)
	// BatchRejected: a POST was refused before its batch was stored; reason is a short
	// lower-case word such as "overloaded", "conflict", "bad_request" or "too_large".
	BatchRejected(function, reason string)
	// BatchStarted: a worker claimed a batch and is about to run its function.
	BatchStarted(RunInfo)
	// BatchFinished: a worker recorded the outcome of an attempt (RunInfo.Outcome).
	BatchFinished(RunInfo)
}

// AcceptInfo describes an accepted POST.
type AcceptInfo struct {
	Key     Key
	QueryID string
	Rows    int
	Bytes   int
	// Duplicate is true when the batch was already stored: a retried POST that started
	// nothing new.
	Duplicate bool
	// Duration is how long storing (or finding) the batch took, without the wait for a
	// synchronous answer.
	Duration time.Duration
}

// Outcome is how an attempt on a batch ended.
type Outcome string

const (
	// OutcomeSucceeded: the batch succeeded and its result is stored.
	OutcomeSucceeded Outcome = "succeeded"
	// OutcomeFailed: the batch failed for good; RunInfo.Error says why.
	OutcomeFailed Outcome = "failed"
	// OutcomeRetried: a retryable error put the batch back in the queue after a backoff.
	OutcomeRetried Outcome = "retried"
	// OutcomeHandedBack: shutdown interrupted the attempt; the batch is queued again.
	OutcomeHandedBack Outcome = "handed_back"
	// OutcomeLost: the worker lost its lease (or could not record the outcome); another
	// worker will run the batch.
	OutcomeLost Outcome = "lost"
)

// Final reports whether the outcome ends the batch's life in the queue.
func (o Outcome) Final() bool { return o == OutcomeSucceeded || o == OutcomeFailed }

// RunInfo describes an attempt on a batch. BatchStarted sets the fields up to QueueWait;
// BatchFinished sets them all.
type RunInfo struct {
	Key     Key
	QueryID string
	Rows    int
	Attempt int
	// CreatedAt is when the batch was first accepted.
	CreatedAt time.Time
	// QueueWait is how long the batch waited for this attempt: since it was accepted, or
	// since its backoff ended for a retry.
	QueueWait time.Duration
	// Headers are the batch's request headers (Batch.Headers), whose trace context links
	// the attempt to the POST that brought the batch.
	Headers map[string]string
	// Outcome, Error (for failed and retried attempts), Run (the function's own time) and
	// Total (accepted to finished, for final outcomes) are set by BatchFinished.
	Outcome Outcome
	Error   *Error
	Run     time.Duration
	Total   time.Duration
}

// NopObserver ignores everything; embed it in an Observer that needs only some methods.
type NopObserver struct{}

func (NopObserver) BatchAccepted(AcceptInfo)     {}
func (NopObserver) BatchRejected(string, string) {}
func (NopObserver) BatchStarted(RunInfo)         {}
func (NopObserver) BatchFinished(RunInfo)        {}

// Observers returns an Observer that tells each of obs in turn (nil ones skipped).
func Observers(obs ...Observer) Observer {
	var list multiObserver
	for _, o := range obs {
		if o != nil {
			list = append(list, o)
		}
	}
	switch len(list) {
	case 0:
		return NopObserver{}
	case 1:
		return list[0]
	}
	return list
}

type multiObserver []Observer

func (m multiObserver) BatchAccepted(i AcceptInfo) {
	for _, o := range m {
		o.BatchAccepted(i)
	}
}

func (m multiObserver) BatchRejected(function, reason string) {
	for _, o := range m {
		o.BatchRejected(function, reason)
	}
}

func (m multiObserver) BatchStarted(i RunInfo) {
	for _, o := range m {
		o.BatchStarted(i)
	}
}

func (m multiObserver) BatchFinished(i RunInfo) {
	for _, o := range m {
		o.BatchFinished(i)
	}
}

// observerOrNop returns o, or a NopObserver when o is nil, so call sites need no check.
func observerOrNop(o Observer) Observer {
	if o == nil {
		return NopObserver{}
	}
	return o
}

// startInfo describes the attempt a worker is starting on the claimed batch b.
func startInfo(b *Batch) RunInfo {
	since := b.CreatedAt
	if b.Attempts > 1 && b.RunAfter.After(since) {
		since = b.RunAfter
	}
	return RunInfo{
		Key: b.Key, QueryID: b.QueryID, Rows: b.Rows, Attempt: b.Attempts,
		CreatedAt: b.CreatedAt, QueueWait: max(b.StartedAt.Sub(since), 0), Headers: b.Headers,
	}
}
