package memory

import (
	"context"
	"slices"
	"time"

	"github.com/asyncfn/asyncfn"
)

var _ asyncfn.Overviewer = (*Store)(nil)

// Overview reads every batch under the store's mutex: the memory store serves one process
// and holds what fits in its memory, so there is nothing cheaper to read.
func (s *Store) Overview(ctx context.Context, now time.Time, p asyncfn.OverviewParams) (*asyncfn.Overview, error) {
	p = p.Normalized()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, asyncfn.ErrClosed
	}
	var fb asyncfn.OverviewBuilder
	var failed []*asyncfn.Batch
	from := now.Add(-p.Window)
	for _, b := range s.batches {
		if !b.ExpiresAt.After(now) {
			continue
		}
		inWindow := b.FinishedAt.After(from) && !b.FinishedAt.After(now)
		switch b.State {
		case asyncfn.Queued:
			fb.Queued(b.Key.Function, 1, b.CreatedAt)
		case asyncfn.Running:
			fb.Function(b.Key.Function).Running++
		case asyncfn.Succeeded:
			if inWindow {
				f := fb.Function(b.Key.Function)
				f.Succeeded++
				f.Rows += b.Rows
			}
		case asyncfn.Failed:
			if inWindow {
				fb.Function(b.Key.Function).Failed++
			}
			failed = append(failed, b)
		}
	}
	slices.SortFunc(failed, func(x, y *asyncfn.Batch) int { return y.FinishedAt.Compare(x.FinishedAt) })
	o := &asyncfn.Overview{Window: p.Window, Functions: fb.Build(), Failures: []asyncfn.FailureOverview{}}
	for _, b := range failed[:min(len(failed), p.Failures)] {
		f := asyncfn.FailureOverview{Key: b.Key, QueryID: b.QueryID, Attempts: b.Attempts, FinishedAt: b.FinishedAt}
		if b.Error != nil {
			f.Error = *b.Error
		}
		o.Failures = append(o.Failures, f)
	}
	return o, nil
}
