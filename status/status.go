// Package status is asyncfn's status page for people: the functions served, batches
// queued, running and done in the last minutes, throughput and latency as small live
// charts, and the most recent batches and failures with their messages.
//
// A Recorder is an asyncfn.Observer that keeps a few minutes of history in memory, per
// process: it costs a mutex and a few additions per batch, and needs no database. Beside
// it, the page shows the deployment (every process sharing the store) as the store's
// asyncfn.Overviewer tells, read at most once per StoreTTL. The page is server-rendered
// HTML (html/template) with a little inline JavaScript that polls /status.json and
// redraws; it needs no build step and loads nothing from elsewhere, so it works offline
// and under a strict Content-Security-Policy.
package status

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/asyncfn/asyncfn"
)

// History the recorder keeps: Buckets of BucketWidth each (10 minutes), and the last
// RecentSize batches and failures.
const (
	BucketWidth = 5 * time.Second
	Buckets     = 120
	RecentSize  = 20
)

// Recorder keeps the recent history shown on the status page. It implements
// asyncfn.Observer; its zero value is not usable, use New.
type Recorder struct {
	store   asyncfn.Store
	names   []string
	started time.Time
	now     func() time.Time

	// smu guards the store's cached figures and the logger; it is held while the store
	// is read, so that concurrent viewers wait for one read.
	smu    sync.Mutex
	cached storeFigures
	log    *slog.Logger

	mu       sync.Mutex
	funcs    map[string]*FunctionStats
	buckets  [Buckets]bucket
	recent   ring[Batch]
	failures ring[Failure]
}

// New returns a recorder for the functions in reg; store (may be nil) is read for the
// counts of its batches, and for the deployment's figures if it is an asyncfn.Overviewer,
// at most once per StoreTTL (see Snapshot). Pass the store itself, not a wrapper that
// hides its Overview.
func New(reg *asyncfn.Registry, store asyncfn.Store) *Recorder {
	r := &Recorder{store: store, names: reg.Names(), started: time.Now(), now: time.Now,
		funcs: map[string]*FunctionStats{}, log: slog.New(slog.DiscardHandler)}
	for _, n := range r.names {
		f, _ := reg.Lookup(n)
		r.funcs[n] = &FunctionStats{Name: n, Runs: f.Description}
	}
	r.recent.items = make([]Batch, RecentSize)
	r.failures.items = make([]Failure, RecentSize)
	return r
}

// FunctionStats are one function's counts since the process started.
type FunctionStats struct {
	Name string `json:"name"`
	// Runs is what the function runs (asyncfn.Function.Description): an upstream's URL,
	// a command, or empty for Go code.
	Runs       string `json:"runs,omitempty"`
	Accepted   int64  `json:"accepted"`
	Duplicates int64  `json:"duplicates"`
	Rejected   int64  `json:"rejected"`
	Running    int64  `json:"running"`
	Succeeded  int64  `json:"succeeded"`
	Failed     int64  `json:"failed"`
	Retried    int64  `json:"retried"`
	Rows       int64  `json:"rows"`
	// AvgSeconds is the mean time from accepting a batch to its final outcome.
	AvgSeconds float64 `json:"avg_seconds"`
	totalSecs  float64
}

// Batch is a finished attempt, for the table of recent batches.
type Batch struct {
	Time         time.Time `json:"time"`
	Function     string    `json:"function"`
	BatchID      string    `json:"batch_id"`
	Rows         int       `json:"rows"`
	Attempt      int       `json:"attempt"`
	Outcome      string    `json:"outcome"`
	QueueSeconds float64   `json:"queue_seconds"`
	RunSeconds   float64   `json:"run_seconds"`
	TotalSeconds float64   `json:"total_seconds"`
}

// Failure is a failed or retried attempt with its message, as the SQL user sees it.
type Failure struct {
	Time     time.Time `json:"time"`
	Function string    `json:"function"`
	BatchID  string    `json:"batch_id"`
	QueryID  string    `json:"query_id"`
	Attempt  int       `json:"attempt"`
	Outcome  string    `json:"outcome"`
	Kind     string    `json:"kind"`
	Message  string    `json:"message"`
}

// Point is one bucket of the charts.
type Point struct {
	Time       int64   `json:"t"` // start of the bucket, Unix seconds
	Accepted   int64   `json:"accepted"`
	Succeeded  int64   `json:"succeeded"`
	Failed     int64   `json:"failed"`
	Rows       int64   `json:"rows"`
	RowsPerSec float64 `json:"rows_per_second"`
	AvgSeconds float64 `json:"avg_seconds"` // mean accept-to-finish time of the batches finished in it
	MaxSeconds float64 `json:"max_seconds"`
}

// Window sums the last Minutes of buckets.
type Window struct {
	Minutes    int     `json:"minutes"`
	Accepted   int64   `json:"accepted"`
	Succeeded  int64   `json:"succeeded"`
	Failed     int64   `json:"failed"`
	Rows       int64   `json:"rows"`
	RowsPerSec float64 `json:"rows_per_second"`
}

// StoreCounts are the store's live batches (every process sharing it), or why they could
// not be read.
type StoreCounts struct {
	Queued    int    `json:"queued"`
	Running   int    `json:"running"`
	Succeeded int    `json:"succeeded"`
	Failed    int    `json:"failed"`
	Error     string `json:"error,omitempty"`
}

// Snapshot is everything the page shows; /status.json serves it.
type Snapshot struct {
	Now           time.Time       `json:"now"`
	Started       time.Time       `json:"started"`
	BucketSeconds int             `json:"bucket_seconds"`
	Store         StoreCounts     `json:"store"`
	Deployment    Deployment      `json:"deployment"`
	Last          Window          `json:"last"`
	Functions     []FunctionStats `json:"functions"`
	Series        []Point         `json:"series"`
	Recent        []Batch         `json:"recent"`   // newest first
	Failures      []Failure       `json:"failures"` // newest first
}

type bucket struct {
	start                     int64 // Unix seconds; a stale bucket is reset on use
	accepted, succeeded, fail int64
	rows                      int64
	latSum, latMax            float64
	latN                      int64
}

// at returns the bucket for t, reset if it held an older period. Call with mu held.
func (r *Recorder) at(t time.Time) *bucket {
	w := int64(BucketWidth / time.Second)
	start := t.Unix() / w * w
	b := &r.buckets[(start/w)%Buckets]
	if b.start != start {
		*b = bucket{start: start}
	}
	return b
}

// fn returns the stats of a function, adding one never registered (a worker sharing a
// store with front ends of other functions never sees those, so this is rare).
func (r *Recorder) fn(name string) *FunctionStats {
	f, ok := r.funcs[name]
	if !ok {
		f = &FunctionStats{Name: name}
		r.funcs[name] = f
		r.names = append(r.names, name)
	}
	return f
}

// BatchAccepted implements asyncfn.Observer.
func (r *Recorder) BatchAccepted(i asyncfn.AcceptInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.funcs[i.Key.Function]
	if !ok {
		return
	}
	if i.Duplicate {
		f.Duplicates++
		return
	}
	f.Accepted++
	r.at(r.now()).accepted++
}

// BatchRejected implements asyncfn.Observer; rejections of unknown routes are not kept.
func (r *Recorder) BatchRejected(function, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.funcs[function]; ok {
		f.Rejected++
	}
}

// BatchStarted implements asyncfn.Observer.
func (r *Recorder) BatchStarted(i asyncfn.RunInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fn(i.Key.Function).Running++
}

// BatchFinished implements asyncfn.Observer.
func (r *Recorder) BatchFinished(i asyncfn.RunInfo) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.fn(i.Key.Function)
	f.Running--
	b := r.at(now)
	switch i.Outcome {
	case asyncfn.OutcomeSucceeded:
		f.Succeeded++
		f.Rows += int64(i.Rows)
		b.succeeded++
		b.rows += int64(i.Rows)
	case asyncfn.OutcomeFailed:
		f.Failed++
		b.fail++
	case asyncfn.OutcomeRetried:
		f.Retried++
	}
	if i.Outcome.Final() {
		secs := i.Total.Seconds()
		f.totalSecs += secs
		b.latSum += secs
		b.latN++
		b.latMax = max(b.latMax, secs)
	}
	r.recent.add(Batch{Time: now, Function: i.Key.Function, BatchID: i.Key.BatchID, Rows: i.Rows,
		Attempt: i.Attempt, Outcome: string(i.Outcome), QueueSeconds: i.QueueWait.Seconds(),
		RunSeconds: i.Run.Seconds(), TotalSeconds: i.Total.Seconds()})
	if i.Error != nil && (i.Outcome == asyncfn.OutcomeFailed || i.Outcome == asyncfn.OutcomeRetried) {
		r.failures.add(Failure{Time: now, Function: i.Key.Function, BatchID: i.Key.BatchID, QueryID: i.QueryID,
			Attempt: i.Attempt, Outcome: string(i.Outcome), Kind: string(i.Error.Kind), Message: i.Error.Message})
	}
}

// Snapshot returns what the page shows now. The store's figures in it are read at most
// once per StoreTTL, by whichever call comes first, within StoreTimeout.
func (r *Recorder) Snapshot(ctx context.Context) Snapshot {
	stored := r.readStore(ctx)
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Snapshot{Now: now, Started: r.started, BucketSeconds: int(BucketWidth / time.Second), Store: stored.counts,
		Deployment: r.withProcess(stored.dep, now), Last: Window{Minutes: 5}}
	for _, n := range r.names {
		f := *r.funcs[n]
		if done := f.Succeeded + f.Failed; done > 0 {
			f.AvgSeconds = f.totalSecs / float64(done)
		}
		s.Functions = append(s.Functions, f)
	}
	w := int64(BucketWidth / time.Second)
	current := now.Unix() / w * w
	lastFrom := current - int64(s.Last.Minutes*60) + w
	for t := current - (Buckets-1)*w; t <= current; t += w {
		p := Point{Time: t}
		if b := &r.buckets[(t/w)%Buckets]; b.start == t {
			p.Accepted, p.Succeeded, p.Failed, p.Rows, p.MaxSeconds = b.accepted, b.succeeded, b.fail, b.rows, b.latMax
			if b.latN > 0 {
				p.AvgSeconds = b.latSum / float64(b.latN)
			}
			p.RowsPerSec = float64(b.rows) / float64(w)
		}
		s.Series = append(s.Series, p)
		if t >= lastFrom {
			s.Last.Accepted += p.Accepted
			s.Last.Succeeded += p.Succeeded
			s.Last.Failed += p.Failed
			s.Last.Rows += p.Rows
		}
	}
	s.Last.RowsPerSec = float64(s.Last.Rows) / float64(s.Last.Minutes*60)
	s.Recent = r.recent.newestFirst()
	s.Failures = r.failures.newestFirst()
	return s
}

// ring keeps the last len(items) values added.
type ring[T any] struct {
	items []T
	next  int
	full  bool
}

func (g *ring[T]) add(v T) {
	g.items[g.next] = v
	g.next = (g.next + 1) % len(g.items)
	if g.next == 0 {
		g.full = true
	}
}

func (g *ring[T]) newestFirst() []T {
	n := g.next
	if g.full {
		n = len(g.items)
	}
	out := make([]T, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, g.items[(g.next-i+len(g.items))%len(g.items)])
	}
	return out
}
