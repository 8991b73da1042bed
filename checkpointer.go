package asyncfn

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// checkpointer saves the rows a function reports with RowDone while its batch runs: it
// encodes each value as the result will hold it, and a background flusher hands them to
// Store.Checkpoint every cfg.Rows rows or cfg.Interval. A failed write is tried again at the
// next flush and never fails the batch; a lost lease cancels the run, as the heartbeat does.
type checkpointer struct {
	pool   *Pool
	key    Key
	cfg    CheckpointConfig
	log    *slog.Logger
	cancel context.CancelCauseFunc
	rows   []Row // the batch's, by number (ParseRows numbers them 0, 1, ...)

	mu       sync.Mutex
	reported []bool // saved before this attempt, or reported in it
	pending  []SavedRow
	stopped  bool
	warned   bool
	full     chan struct{} // cfg.Rows rows wait

	flushMu sync.Mutex // one write at a time, in order
	stop    func()
}

// newCheckpointer starts the flusher of a run of b on rows, whose saved rows are done
// already. stop ends the flusher; flush writes what waits.
func (p *Pool) newCheckpointer(ctx context.Context, b *Batch, cfg CheckpointConfig, rows []Row, cancel context.CancelCauseFunc, log *slog.Logger) *checkpointer {
	c := &checkpointer{pool: p, key: b.Key, cfg: cfg, log: log, cancel: cancel, rows: rows,
		reported: make([]bool, len(rows)), full: make(chan struct{}, 1)}
	for _, r := range b.Saved {
		if r.Number >= 0 && r.Number < len(rows) {
			c.reported[r.Number] = true
		}
	}
	flushCtx, stopFlush := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		var tick <-chan time.Time
		if cfg.Interval > 0 {
			t := time.NewTicker(cfg.Interval)
			defer t.Stop()
			tick = t.C
		}
		for {
			select {
			case <-flushCtx.Done():
				return
			case <-tick:
			case <-c.full:
			}
			c.flush(flushCtx)
		}
	})
	c.stop = func() {
		stopFlush()
		wg.Wait()
		c.mu.Lock()
		c.stopped = true // a function that ignored its timeout may still report rows
		c.mu.Unlock()
	}
	return c
}

// rowDone is the run's RowDoneFunc.
func (c *checkpointer) rowDone(number int, value any) {
	if number < 0 || number >= len(c.rows) {
		c.ignore("a row not in the batch", number)
		return
	}
	var buf bytes.Buffer
	if err := appendValue(&buf, newValueEncoder(&buf), c.rows[number], value); err != nil {
		c.ignore(err.Error(), number) // the function's result will fail the same way
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.stopped:
		return
	case c.reported[number]:
		c.warnLocked("a row reported twice, or saved already", number)
		return
	}
	c.reported[number] = true
	c.pending = append(c.pending, SavedRow{Number: number, Value: buf.Bytes()})
	if c.cfg.Rows > 0 && len(c.pending) >= c.cfg.Rows {
		select {
		case c.full <- struct{}{}:
		default:
		}
	}
}

func (c *checkpointer) ignore(why string, number int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.warnLocked(why, number)
}

// warnLocked logs the first row ignored, not each: a function that misreports one row
// likely misreports all. Callers hold mu.
func (c *checkpointer) warnLocked(why string, number int) {
	if !c.warned {
		c.warned = true
		c.log.Warn("RowDone ignored (logged once per attempt)", "why", why, "row", number)
	}
}

// flush writes the rows waiting, if any; on failure they wait for the next flush.
func (c *checkpointer) flush(ctx context.Context) {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	c.mu.Lock()
	rows := c.pending
	c.pending = nil
	c.mu.Unlock()
	if len(rows) == 0 {
		return
	}
	err := c.pool.store.Checkpoint(ctx, c.key, c.pool.cfg.ID, c.pool.now(), rows)
	switch {
	case err == nil:
		c.log.Debug("checkpoint saved", "rows", len(rows))
	case errors.Is(err, ErrLeaseLost):
		c.cancel(ErrLeaseLost)
	default:
		if ctx.Err() == nil {
			c.log.Warn("could not save a checkpoint; will try again", "err", err, "rows", len(rows))
		}
		c.mu.Lock()
		c.pending = append(rows, c.pending...)
		c.mu.Unlock()
	}
}

// unsaved returns the rows that saved lacks.
func unsaved(rows []Row, saved []SavedRow) []Row {
	if len(saved) == 0 {
		return rows
	}
	done := savedValues(saved)
	return slices.DeleteFunc(slices.Clone(rows), func(r Row) bool { _, ok := done[r.Number]; return ok })
}

func savedValues(saved []SavedRow) map[int]json.RawMessage {
	m := make(map[int]json.RawMessage, len(saved))
	for _, r := range saved {
		m[r.Number] = r.Value
	}
	return m
}

// withSaved returns the values of rows in order: a saved row's from saved, the others'
// from values, the function's for unsaved(rows, saved).
func withSaved(rows []Row, saved []SavedRow, values []any) []any {
	done := savedValues(saved)
	all := make([]any, len(rows))
	for i, r := range rows {
		if v, ok := done[r.Number]; ok {
			all[i] = v
		} else {
			all[i], values = values[0], values[1:]
		}
	}
	return all
}
