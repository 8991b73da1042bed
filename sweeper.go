package asyncfn

import (
	"context"
	"log/slog"
	"time"

	"github.com/asyncfn/asyncfn/internal/wait"
)

// Sweeper deletes expired batches in the background, so that storage does not grow
// without bound. Several sweepers may share a store: the store's Sweep makes them skip
// each other's rows rather than wait for them.
type Sweeper struct {
	store    Store
	logger   *slog.Logger
	interval time.Duration
	now      func() time.Time
	loop     loop
}

// sweepChunk bounds one Sweep call, so that a backlog is deleted in short transactions.
const sweepChunk = 1000

// NewSweeper returns a sweeper that runs every interval (a minute is plenty: expired
// batches are already invisible, sweeping only reclaims space).
func NewSweeper(store Store, logger *slog.Logger, interval time.Duration) *Sweeper {
	return &Sweeper{store: store, logger: logger, interval: interval, now: time.Now}
}

// Start sweeps once at once, then every interval, until Stop.
func (s *Sweeper) Start(ctx context.Context) {
	s.loop.start(ctx, func(ctx context.Context) {
		for {
			s.SweepOnce(ctx)
			if !wait.Sleep(ctx, s.interval) {
				return
			}
		}
	})
}

// Stop stops sweeping; it is safe to call more than once.
func (s *Sweeper) Stop() { s.loop.stop() }

// SweepOnce deletes every batch expired by now and returns how many it deleted.
func (s *Sweeper) SweepOnce(ctx context.Context) int {
	total := 0
	for ctx.Err() == nil {
		n, err := s.store.Sweep(ctx, s.now(), sweepChunk)
		total += n
		if err != nil {
			s.logger.Warn("sweeping expired batches failed", "err", err)
			break
		}
		if n < sweepChunk {
			break
		}
	}
	if total > 0 {
		s.logger.Info("swept expired batches", "deleted", total)
	}
	return total
}
