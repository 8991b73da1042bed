package sqlite

import (
	"context"
	"time"

	"github.com/asyncfn/asyncfn"
)

var _ asyncfn.Overviewer = (*Store)(nil)

// Overview runs three queries on indexes, none of which reads the finished batches kept
// for the retention period: the queued and running batches by function (batches_state),
// the batches finished in the window (batches_finished, a range of finish times per
// state) and the latest failures (batches_finished backwards, LIMIT).
func (s *Store) Overview(ctx context.Context, now time.Time, p asyncfn.OverviewParams) (*asyncfn.Overview, error) {
	if s.closed.Load() {
		return nil, asyncfn.ErrClosed
	}
	p = p.Normalized()
	var fb asyncfn.OverviewBuilder
	var fn string
	var state asyncfn.State
	var n, sum int
	var at int64
	err := s.each(ctx, func() {
		if state == asyncfn.Queued {
			fb.Queued(fn, n, fromNanos(at))
		} else {
			fb.Function(fn).Running += n
		}
	}, []any{&fn, &state, &n, &at}, `SELECT function, state, count(*), min(created_at) FROM batches
		WHERE state IN ('queued', 'running') AND expires_at > ? GROUP BY function, state`, nanos(now))
	if err != nil {
		return nil, err
	}
	err = s.each(ctx, func() {
		f := fb.Function(fn)
		if state == asyncfn.Succeeded {
			f.Succeeded += n
			f.Rows += sum
		} else {
			f.Failed += n
		}
	}, []any{&fn, &state, &n, &sum}, `SELECT function, state, count(*), sum(rows) FROM batches
		WHERE state IN ('succeeded', 'failed') AND finished_at > ? AND finished_at <= ? AND expires_at > ?
		GROUP BY function, state`, nanos(now.Add(-p.Window)), nanos(now), nanos(now))
	if err != nil {
		return nil, err
	}
	o := &asyncfn.Overview{Window: p.Window, Functions: fb.Build(), Failures: []asyncfn.FailureOverview{}}
	var f asyncfn.FailureOverview
	var kind string
	err = s.each(ctx, func() {
		f.FinishedAt, f.Error.Kind = fromNanos(at), asyncfn.ErrorKind(kind)
		o.Failures = append(o.Failures, f)
	}, []any{&f.Key.Function, &f.Key.BatchID, &f.QueryID, &f.Attempts, &at, &kind, &f.Error.Message},
		`SELECT function, batch_id, query_id, attempts, finished_at, error_kind, error_message FROM batches
		WHERE state = 'failed' AND expires_at > ? ORDER BY finished_at DESC LIMIT ?`, nanos(now), p.Failures)
	if err != nil {
		return nil, err
	}
	return o, nil
}

// each runs query on the read pool and calls fn after scanning each row into dest.
func (s *Store) each(ctx context.Context, fn func(), dest []any, query string, args ...any) error {
	rows, err := s.read.QueryContext(ctx, query, args...)
	if err != nil {
		return s.translate(err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return s.translate(err)
		}
		fn()
	}
	return s.translate(rows.Err())
}
