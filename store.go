package asyncfn

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Store keeps batches where every front end and worker sharing it can see them. It is the
// contract every engine implements; package storetest turns each sentence below into tests.
//
// Times: every method that compares with the clock takes the caller's now, so that engines
// agree with each other and tests control time. A batch whose ExpiresAt is not after now is
// gone: no method returns or changes it, whether or not Sweep has removed it yet.
//
// Errors: methods return the sentinel errors named in their comments (compare with
// errors.Is); an engine that cannot reach its backend returns an error wrapping
// ErrUnavailable; after Close every method returns ErrClosed.
//
// A write whose ctx Unawaited made records what no client is waiting for (an answer
// served already): an engine may hold it for a moment to commit it with other writes. It
// is durable, as any other, once the method returns.
type Store interface {
	// Create stores b, which must be Queued with Key, Payload, Digest, Rows, MaxAttempts,
	// CreatedAt and ExpiresAt set; b.CreatedAt is its now. b may instead be Running,
	// claimed by its creator (a worker of the accepting process runs it at once), with
	// Owner, LeaseUntil, StartedAt and Attempts 1 set as Claim would set them; such a
	// batch may come without its Payload (nil), which its creator holds in memory and
	// stores with SavePayload before it acknowledges the batch with a 202. A creator that
	// ran b's first attempt before storing it (ServiceConfig.Exclusive) stores b as that
	// attempt left it, as Finished leaves a claimed batch: Succeeded or Failed, without its
	// Payload, with its Result or Error, FinishedAt and, if its answer went out,
	// DeliveredAt; or Queued, with its Payload, to be tried again (Attempts, RunAfter and
	// the attempt's Error set). If a live batch with b.Key exists, Create changes
	// nothing and returns a copy of it with ErrDuplicate when its Digest equals b.Digest,
	// or with ErrConflict when it does not. Creating the same key concurrently stores
	// exactly one batch; every other caller gets ErrDuplicate or ErrConflict. A key whose
	// batch has expired may be created again.
	Create(ctx context.Context, b *Batch) (*Batch, error)

	// Get returns a copy of the batch, Payload included only if withPayload is true, or
	// ErrNotFound if there is none or it has expired at now.
	Get(ctx context.Context, key Key, now time.Time, withPayload bool) (*Batch, error)

	// Claim leases up to p.Limit batches of the functions in p.Functions (all functions
	// if empty) to p.Owner until p.Now+p.Lease, oldest first, and returns them with their
	// payloads. Claimable are Queued batches whose RunAfter is not after p.Now, and
	// Running batches whose lease expired before p.Now (their worker is gone), in both
	// cases only once their payload is stored. Each claim
	// sets State Running, Owner, LeaseUntil and StartedAt and adds one to Attempts. A
	// Running batch with an expired lease that has no attempts left is not claimed but
	// Failed with an Internal error that says the workers stopped before finishing it.
	// Concurrent claims never return the same batch twice. No batch: an empty slice.
	Claim(ctx context.Context, p ClaimParams) ([]*Batch, error)

	// ClaimKey is Claim for one batch, for a worker told which batch to run (AWS Lambda's
	// event). ErrNotFound if it does not exist or has expired; ErrNotClaimable if it is
	// Running under a live lease, waiting for RunAfter, or finished. An expired lease with
	// no attempts left fails the batch as Claim does and returns ErrNotClaimable.
	ClaimKey(ctx context.Context, key Key, p ClaimParams) (*Batch, error)

	// SavePayload stores the payload of a batch created without one; it changes nothing
	// if the batch has its payload already. ErrNotFound if no batch with key is live at
	// now.
	SavePayload(ctx context.Context, key Key, now time.Time, payload []byte) error

	// Extend moves the lease of a Running batch held by owner to until (a heartbeat).
	// ErrLeaseLost if owner does not hold it, whether or not it has expired meanwhile.
	Extend(ctx context.Context, key Key, owner string, until time.Time) error

	// Finish ends owner's attempt on a Running batch as p.Outcome says (see Finished):
	// Succeeded with p.Result, Failed with p.Error, or back to Queued until p.RunAfter,
	// retried (p.Error its last error) or handed back (the attempt not counted). A final
	// outcome with p.GraceUntil set is also delivered at p.Now, as MarkDelivered(key,
	// p.Now, p.GraceUntil) right after would record it. ErrLeaseLost if owner does not
	// hold the lease, in which case nothing changes.
	Finish(ctx context.Context, key Key, owner string, p FinishParams) error

	// Checkpoint adds rows to the rows saved for the Running batch whose lease owner holds,
	// which Claim, ClaimKey and Get with its payload return in Batch.Saved: a later attempt
	// computes only the others. A row already saved, or given twice, keeps its first
	// value. ErrLeaseLost if owner does not hold the lease or the batch has expired at
	// now, in which case nothing changes. The values given over the batch's life, those
	// ignored included, total at most MaxSavedBytes: ErrCheckpointTooLarge for a call that
	// would pass it, which changes nothing. Finish with OutcomeRetried or
	// OutcomeHandedBack keeps the rows saved, for the next attempt; a finished batch
	// need not keep them, and a batch created again under the key of an expired one
	// starts with none.
	Checkpoint(ctx context.Context, key Key, owner string, now time.Time, rows []SavedRow) error

	// MarkDelivered records that the final answer of a finished batch was served at now
	// and brings its ExpiresAt forward to expiresAt if that is earlier (the grace period
	// for a lost response). Only the first call changes anything; later calls and calls
	// on unfinished batches are no-ops. ErrNotFound if the batch does not exist.
	MarkDelivered(ctx context.Context, key Key, now, expiresAt time.Time) error

	// Sweep deletes batches that expired at now, up to limit of them, and returns how many
	// it deleted. Concurrent sweeps never fail because of each other.
	Sweep(ctx context.Context, now time.Time, limit int) (int, error)

	// Stats counts live batches by state.
	Stats(ctx context.Context, now time.Time) (Stats, error)

	// CountQueued counts the live Queued batches, as Stats does, but without reading the
	// finished ones: front ends ask on every POST (through a short cache) to answer 429
	// under overload, and a store holds a retention period's worth of finished batches.
	CountQueued(ctx context.Context, now time.Time) (int, error)

	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error

	// Close releases the store's resources. It is safe to call more than once.
	Close() error
}

// ClaimParams says who claims, for how long and what.
type ClaimParams struct {
	Owner     string
	Now       time.Time
	Lease     time.Duration
	Limit     int
	Functions []string
}

// FinishParams is the outcome of an attempt, made by Succeed, Fail, Retry or HandBack.
type FinishParams struct {
	Now time.Time
	// Outcome is OutcomeSucceeded, OutcomeFailed, OutcomeRetried or OutcomeHandedBack.
	Outcome Outcome
	// Result is the answer of a batch that succeeded.
	Result []byte
	// Error is why the batch failed, or the last error of a batch retried.
	Error *Error
	// RunAfter is when a batch retried or handed back may be claimed again.
	RunAfter time.Time
	// GraceUntil, for a final outcome whose answer goes out as it is recorded (the POST
	// that brought the batch waits for it), records the delivery with the outcome: one
	// write rather than two. Zero: not delivered yet.
	GraceUntil time.Time
}

// Succeed ends an attempt with the batch's answer.
func Succeed(now time.Time, result []byte) FinishParams {
	return FinishParams{Now: now, Outcome: OutcomeSucceeded, Result: result}
}

// Fail ends the batch with err.
func Fail(now time.Time, err *Error) FinishParams {
	return FinishParams{Now: now, Outcome: OutcomeFailed, Error: err}
}

// Retry puts the batch back in the queue until runAfter, with err as its last error; the
// attempt counts.
func Retry(now time.Time, err *Error, runAfter time.Time) FinishParams {
	return FinishParams{Now: now, Outcome: OutcomeRetried, Error: err, RunAfter: runAfter}
}

// HandBack puts the batch back in the queue until runAfter after an attempt interrupted by
// shutdown, which does not count; its last error stays.
func HandBack(now, runAfter time.Time) FinishParams {
	return FinishParams{Now: now, Outcome: OutcomeHandedBack, RunAfter: runAfter}
}

// AddSaved returns saved, in row order without duplicates, with those of rows it lacks
// added, the first of a row given twice winning, so that every engine keeps the same
// rows (see Store.Checkpoint). It may reuse saved's array.
func AddSaved(saved, rows []SavedRow) []SavedRow {
	have := make(map[int]bool, len(saved)+len(rows))
	for _, r := range saved {
		have[r.Number] = true
	}
	n := len(saved)
	for _, r := range rows {
		if !have[r.Number] {
			have[r.Number] = true
			saved = append(saved, SavedRow{Number: r.Number, Value: slices.Clone(r.Value)})
		}
	}
	if len(saved) > n {
		slices.SortFunc(saved, func(a, b SavedRow) int { return a.Number - b.Number })
	}
	return saved
}

// SavedBytes is the size of rows as MaxSavedBytes counts it.
func SavedBytes(rows []SavedRow) int {
	n := 0
	for _, r := range rows {
		n += len(r.Value)
	}
	return n
}

// Stats are counts of live batches by state.
type Stats struct {
	Queued    int
	Running   int
	Succeeded int
	Failed    int
}

// Event tells that a batch changed: Queued (new or retried: workers may claim it) or done
// (Succeeded or Failed: a held poll may answer). A zero Key means some batch of that state
// (a notification too long to name it).
type Event struct {
	Key   Key
	State State
	// Batch is the finished batch, without its payload, when the publisher has it in
	// memory (a worker of this process): a held request answers from it without reading
	// the store. Nil in events from other processes.
	Batch *Batch
}

// Notifier is implemented by stores shared by several processes that can tell each
// process about the changes made by the others (PostgreSQL's LISTEN/NOTIFY). Stores used
// by one process need not implement it: the service tells itself.
type Notifier interface {
	// Listen calls fn for every event published by any process, including this one,
	// until ctx is done or the connection fails, and returns the reason. Events may be
	// lost or repeated; listeners must re-read the store. fn must not block. A finish
	// that records its answer's delivery (FinishParams.GraceUntil) need not publish one:
	// its client has the answer, and a request held elsewhere for the batch finds it when
	// it re-reads the store (ServiceConfig.Recheck).
	Listen(ctx context.Context, fn func(Event)) error
}

// Add counts n batches in state s.
func (st *Stats) Add(s State, n int) {
	switch s {
	case Queued:
		st.Queued += n
	case Running:
		st.Running += n
	case Succeeded:
		st.Succeeded += n
	case Failed:
		st.Failed += n
	}
}

// AbandonedError is the error of a batch whose lease expired with no attempts left: its
// workers stopped (crashed, were killed, or lost the store) before finishing it.
func AbandonedError(attempts int) *Error {
	return &Error{Kind: Internal, Message: fmt.Sprintf(
		"the batch was given up: the worker running it stopped (crashed or was killed) before finishing it, on every attempt allowed (%d).", attempts)}
}

// Finished returns a copy of the Running batch b as Finish with p leaves it, so that
// every engine applies the same rules.
func Finished(b *Batch, p FinishParams) *Batch {
	next := *b
	next.Owner = ""
	next.LeaseUntil = time.Time{}
	switch p.Outcome {
	case OutcomeRetried:
		next.State = Queued
		next.RunAfter = p.RunAfter
		next.Error = p.Error
	case OutcomeHandedBack:
		next.State = Queued
		next.RunAfter = p.RunAfter
		next.Attempts-- // interrupted by shutdown: the attempt does not count
	case OutcomeFailed:
		next.State = Failed
		next.Error = p.Error
		next.FinishedAt = p.Now
	default:
		next.State = Succeeded
		next.Result = p.Result
		next.Error = nil
		next.FinishedAt = p.Now
	}
	if p.Outcome.Final() && !p.GraceUntil.IsZero() && next.DeliveredAt.IsZero() {
		next.DeliveredAt = p.Now
		if p.GraceUntil.Before(next.ExpiresAt) {
			next.ExpiresAt = p.GraceUntil
		}
	}
	return &next
}

type unawaitedKey struct{}

// Unawaited marks the store writes done with ctx as ones no client waits for (see Store):
// the outcome and delivery of an answer served already.
func Unawaited(ctx context.Context) context.Context {
	return context.WithValue(ctx, unawaitedKey{}, true)
}

// IsUnawaited reports whether Unawaited made ctx, or a context derived from it.
func IsUnawaited(ctx context.Context) bool {
	return ctx.Value(unawaitedKey{}) != nil
}
