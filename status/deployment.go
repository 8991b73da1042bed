package status

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/asyncfn/asyncfn"
)

// Store reads for the page: the store's counts and, from a store that is an
// asyncfn.Overviewer, the deployment's figures are read at most once per StoreTTL,
// however many people watch the page, each read within StoreTimeout.
const (
	StoreTTL     = 5 * time.Second
	StoreTimeout = 2 * time.Second
	// DeploymentWindow is the period of the deployment's throughput and of this process's
	// figures beside it.
	DeploymentWindow = time.Minute
	// DeploymentFailures is how many of the deployment's latest failures the page lists.
	DeploymentFailures = 10
)

// Deployment is what every process sharing the store did, as the store tells, with this
// process's own figures over the same window beside it.
type Deployment struct {
	// Available is false when the store gives no overview (then only Error may be set).
	Available bool      `json:"available"`
	ReadAt    time.Time `json:"read_at"` // when the store was read: figures are up to StoreTTL old
	// WindowSeconds is the period of Succeeded, Failed, Rows and RowsPerSec, ending at ReadAt.
	WindowSeconds int `json:"window_seconds"`
	Queued        int `json:"queued"`
	Running       int `json:"running"`
	// OldestQueuedSeconds is the age of the oldest queued batch; 0: none queued.
	OldestQueuedSeconds float64              `json:"oldest_queued_seconds"`
	Succeeded           int                  `json:"succeeded"`
	Failed              int                  `json:"failed"`
	Rows                int                  `json:"rows"`
	RowsPerSec          float64              `json:"rows_per_second"`
	Functions           []DeploymentFunction `json:"functions"`
	Failures            []DeploymentFailure  `json:"failures"` // newest first
	// Partial says what this store does not count; Error why it could not be read (the
	// figures are then empty). Neither holds the store's own error text, which may name
	// hosts or users: that goes to the log.
	Partial string `json:"partial,omitempty"`
	Error   string `json:"error,omitempty"`
	// This is this process's figures, for comparison.
	This ProcessFigures `json:"this_process"`
}

// DeploymentFunction is one function's line of the deployment.
type DeploymentFunction struct {
	Name                string  `json:"name"`
	Queued              int     `json:"queued"`
	Running             int     `json:"running"`
	RunningHere         int64   `json:"running_here"` // by this process's workers
	OldestQueuedSeconds float64 `json:"oldest_queued_seconds"`
	Succeeded           int     `json:"succeeded"`
	Failed              int     `json:"failed"`
	Rows                int     `json:"rows"`
}

// DeploymentFailure is a failed batch as the store keeps it, whichever process ran it.
type DeploymentFailure struct {
	Time     time.Time `json:"time"`
	Function string    `json:"function"`
	BatchID  string    `json:"batch_id"`
	QueryID  string    `json:"query_id"`
	Attempts int       `json:"attempts"`
	Kind     string    `json:"kind"`
	Message  string    `json:"message"`
}

// ProcessFigures are this process's batches over the deployment's window.
type ProcessFigures struct {
	Running    int64   `json:"running"`
	Succeeded  int64   `json:"succeeded"`
	Failed     int64   `json:"failed"`
	Rows       int64   `json:"rows"`
	RowsPerSec float64 `json:"rows_per_second"`
}

// storeFigures are the cached results of reading the store.
type storeFigures struct {
	at     time.Time
	counts StoreCounts
	dep    Deployment
}

// readStore returns the store's figures, reading them again if they are older than
// StoreTTL. Callers wait for a read under way rather than start their own; the read is
// not cut short when the request that started it goes away, since others wait for it.
func (r *Recorder) readStore(ctx context.Context) storeFigures {
	r.smu.Lock()
	defer r.smu.Unlock()
	now := r.now()
	if !r.cached.at.IsZero() && now.Sub(r.cached.at) < StoreTTL {
		return r.cached
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), StoreTimeout)
	defer cancel()
	f := storeFigures{at: now}
	if r.store != nil {
		st, err := r.store.Stats(ctx, now)
		if err != nil {
			f.counts.Error = r.storeError("The counts of batches", err)
		}
		f.counts.Queued, f.counts.Running, f.counts.Succeeded, f.counts.Failed = st.Queued, st.Running, st.Succeeded, st.Failed
	}
	f.dep = Deployment{ReadAt: now, WindowSeconds: int(DeploymentWindow / time.Second), Functions: []DeploymentFunction{},
		Failures: []DeploymentFailure{}}
	if o, ok := r.store.(asyncfn.Overviewer); ok {
		ov, err := o.Overview(ctx, now, asyncfn.OverviewParams{Window: DeploymentWindow, Failures: DeploymentFailures})
		if err != nil {
			f.dep.Error = r.storeError("The deployment's figures", err)
		} else {
			f.dep.fill(ov, now)
		}
	}
	r.cached = f
	return f
}

// fill sets d from the store's overview read at now.
func (d *Deployment) fill(ov *asyncfn.Overview, now time.Time) {
	d.Available, d.Partial, d.WindowSeconds = true, ov.Partial, int(ov.Window/time.Second)
	age := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return max(now.Sub(t).Seconds(), 0)
	}
	t := ov.Totals()
	d.Queued, d.Running, d.Succeeded, d.Failed, d.Rows = t.Queued, t.Running, t.Succeeded, t.Failed, t.Rows
	d.OldestQueuedSeconds = age(t.OldestQueued)
	d.RowsPerSec = float64(t.Rows) / ov.Window.Seconds()
	for _, f := range ov.Functions {
		d.Functions = append(d.Functions, DeploymentFunction{Name: f.Function, Queued: f.Queued, Running: f.Running,
			OldestQueuedSeconds: age(f.OldestQueued), Succeeded: f.Succeeded, Failed: f.Failed, Rows: f.Rows})
	}
	for _, f := range ov.Failures {
		d.Failures = append(d.Failures, DeploymentFailure{Time: f.FinishedAt, Function: f.Key.Function, BatchID: f.Key.BatchID,
			QueryID: f.QueryID, Attempts: f.Attempts, Kind: string(f.Error.Kind), Message: f.Error.Message})
	}
}

// storeError logs err and returns a sentence for the page that names no host, user or
// other detail of the store's configuration.
func (r *Recorder) storeError(what string, err error) string {
	r.log.Warn("status page: reading the store failed", "what", what, "err", err)
	why := "see the log"
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		why = "it did not answer within " + StoreTimeout.String()
	case errors.Is(err, asyncfn.ErrUnavailable):
		why = "it is unreachable"
	case errors.Is(err, asyncfn.ErrClosed):
		why = "it is closed"
	}
	return what + " could not be read from the store (" + why + "); this process's own figures are still shown."
}

// withProcess adds this process's figures to d: its running batches, per function too,
// and the buckets of the last window; and it ages the oldest queued batches from when the
// store was read to now. Call with mu held.
func (r *Recorder) withProcess(d Deployment, now time.Time) Deployment {
	since := max(now.Sub(d.ReadAt).Seconds(), 0)
	if d.Queued > 0 {
		d.OldestQueuedSeconds += since
	}
	funcs := make([]DeploymentFunction, len(d.Functions))
	for i, f := range d.Functions {
		if s, ok := r.funcs[f.Name]; ok {
			f.RunningHere = s.Running
		}
		if f.Queued > 0 {
			f.OldestQueuedSeconds += since
		}
		funcs[i] = f
	}
	d.Functions = funcs
	var p ProcessFigures
	for _, f := range r.funcs {
		p.Running += f.Running
	}
	w := int64(BucketWidth / time.Second)
	current := now.Unix() / w * w
	for t := current - int64(DeploymentWindow/time.Second) + w; t <= current; t += w {
		if b := &r.buckets[(t/w)%Buckets]; b.start == t {
			p.Succeeded, p.Failed, p.Rows = p.Succeeded+b.succeeded, p.Failed+b.fail, p.Rows+b.rows
		}
	}
	p.RowsPerSec = float64(p.Rows) / DeploymentWindow.Seconds()
	d.This = p
	return d
}

// setLogger sets where store errors are logged.
func (r *Recorder) setLogger(l *slog.Logger) {
	if l != nil {
		r.smu.Lock()
		r.log = l
		r.smu.Unlock()
	}
}
