package asyncfn

import (
	"cmp"
	"context"
	"slices"
	"time"
)

// Overviewer is implemented by stores that can describe the whole deployment sharing them
// (every process's batches, not one process's) cheaply enough for a status page to ask
// every few seconds. Package storetest checks every sentence below.
//
// Overview reads, at now:
//   - per function, the live Queued and Running batches and the CreatedAt of the oldest
//     live Queued one (whether or not its RunAfter has come);
//   - per function, the batches that finished (Succeeded or Failed) in the window
//     (now-p.Window, now], by FinishedAt, and the rows of those that succeeded: the
//     deployment's throughput;
//   - the p.Failures most recently finished Failed batches, newest first, with their
//     error, whenever they finished.
//
// Expired batches (ExpiresAt not after now) count nowhere and are never returned, as
// everywhere in Store. A function appears in Functions, sorted by name, when it has at
// least one non-zero figure. Counts may lag the store by an engine's index delay.
//
// Cost: engines answer from indexes and with limits, never by reading every batch kept for
// the retention period: the unfinished batches (as Claim reads them), the batches finished
// in the window, and at most p.Failures failed ones. An engine that cannot count something
// cheaply leaves it out and says so in Overview.Partial rather than reading everything.
type Overviewer interface {
	Overview(ctx context.Context, now time.Time, p OverviewParams) (*Overview, error)
}

// Overview limits.
const (
	// DefaultOverviewWindow is OverviewParams.Window when zero.
	DefaultOverviewWindow = time.Minute
	// MaxOverviewWindow caps OverviewParams.Window: a longer window would read more
	// finished batches than a status page should.
	MaxOverviewWindow = 15 * time.Minute
	// DefaultOverviewFailures is OverviewParams.Failures when zero.
	DefaultOverviewFailures = 10
	// MaxOverviewFailures caps OverviewParams.Failures.
	MaxOverviewFailures = 100
)

// OverviewParams say how far back Overview looks.
type OverviewParams struct {
	// Window is the period whose finished batches are counted; zero means
	// DefaultOverviewWindow, and it is capped at MaxOverviewWindow.
	Window time.Duration
	// Failures is how many of the most recent failures to return; zero means
	// DefaultOverviewFailures, negative none, and it is capped at MaxOverviewFailures.
	Failures int
}

// Normalized returns p with its defaults and caps applied, as engines use it.
func (p OverviewParams) Normalized() OverviewParams {
	switch {
	case p.Window <= 0:
		p.Window = DefaultOverviewWindow
	case p.Window > MaxOverviewWindow:
		p.Window = MaxOverviewWindow
	}
	switch {
	case p.Failures == 0:
		p.Failures = DefaultOverviewFailures
	case p.Failures < 0:
		p.Failures = 0
	case p.Failures > MaxOverviewFailures:
		p.Failures = MaxOverviewFailures
	}
	return p
}

// Overview is the deployment's state as one store holds it.
type Overview struct {
	// Window is the period Succeeded, Failed and Rows of Functions cover, ending at now.
	Window    time.Duration
	Functions []FunctionOverview
	// Failures are the most recent failed batches, newest first.
	Failures []FailureOverview
	// Partial names what this engine does not count, in a sentence; empty if nothing.
	Partial string
}

// FunctionOverview is one function's figures in an Overview.
type FunctionOverview struct {
	Function string
	Queued   int // live, now
	Running  int // live, now
	// OldestQueued is the CreatedAt of the oldest live queued batch; zero if none.
	OldestQueued time.Time
	Succeeded    int // finished in the window
	Failed       int // finished in the window
	Rows         int // rows of the batches that succeeded in the window
}

// FailureOverview is a failed batch in an Overview.
type FailureOverview struct {
	Key        Key
	QueryID    string
	Attempts   int
	FinishedAt time.Time
	Error      Error
}

// Totals sums the figures of every function; OldestQueued is the oldest of all.
func (o *Overview) Totals() FunctionOverview {
	var t FunctionOverview
	for _, f := range o.Functions {
		t.Queued += f.Queued
		t.Running += f.Running
		t.Succeeded += f.Succeeded
		t.Failed += f.Failed
		t.Rows += f.Rows
		if !f.OldestQueued.IsZero() && (t.OldestQueued.IsZero() || f.OldestQueued.Before(t.OldestQueued)) {
			t.OldestQueued = f.OldestQueued
		}
	}
	return t
}

// OverviewBuilder gathers an Overview's per-function figures from rows read in any order,
// so that engines share the rules of which functions appear and in what order.
type OverviewBuilder struct {
	fns map[string]*FunctionOverview
}

// Function returns the figures of fn, to add to.
func (b *OverviewBuilder) Function(fn string) *FunctionOverview {
	if b.fns == nil {
		b.fns = map[string]*FunctionOverview{}
	}
	f := b.fns[fn]
	if f == nil {
		f = &FunctionOverview{Function: fn}
		b.fns[fn] = f
	}
	return f
}

// Queued counts n live queued batches of fn, the oldest created at oldest.
func (b *OverviewBuilder) Queued(fn string, n int, oldest time.Time) {
	f := b.Function(fn)
	f.Queued += n
	if !oldest.IsZero() && (f.OldestQueued.IsZero() || oldest.Before(f.OldestQueued)) {
		f.OldestQueued = oldest
	}
}

// Build returns the functions with a non-zero figure, sorted by name.
func (b *OverviewBuilder) Build() []FunctionOverview {
	out := []FunctionOverview{}
	for _, f := range b.fns {
		if *f != (FunctionOverview{Function: f.Function}) {
			out = append(out, *f)
		}
	}
	slices.SortFunc(out, func(x, y FunctionOverview) int { return cmp.Compare(x.Function, y.Function) })
	return out
}
