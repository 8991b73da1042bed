package postgres

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/asyncfn/asyncfn"
)

var _ asyncfn.Overviewer = (*Store)(nil)

// overviewQueries are Overview's statements, qualified with the store's schema as the
// others are: $1 is now. unfinished reads the partial index batches_claim (the queued
// and running rows only); finished a range of batches_finished and failures the end of
// batches_failed (migration 0004), with a LIMIT.
type overviewQueries struct{ unfinished, finished, failures string }

func newOverviewQueries(schema string) overviewQueries {
	t := pgx.Identifier{schema}.Sanitize() + ".batches"
	r := strings.NewReplacer("{t}", t)
	return overviewQueries{
		unfinished: r.Replace(`SELECT function, state, count(*), min(created_at) FROM {t}
			WHERE state IN ('queued', 'running') AND expires_at > $1 GROUP BY function, state`),
		finished: r.Replace(`SELECT function, state, count(*), coalesce(sum(row_count), 0) FROM {t}
			WHERE state IN ('succeeded', 'failed') AND finished_at > $2 AND finished_at <= $1 AND expires_at > $1
			GROUP BY function, state`),
		failures: r.Replace(`SELECT function, batch_id, query_id, attempts, finished_at, coalesce(error_kind, ''),
			coalesce(error_message, '') FROM {t}
			WHERE state = 'failed' AND expires_at > $1 ORDER BY finished_at DESC LIMIT $2`),
	}
}

// Overview sends its three queries in one round trip.
func (s *Store) Overview(ctx context.Context, now time.Time, p asyncfn.OverviewParams) (*asyncfn.Overview, error) {
	if s.closed.Load() {
		return nil, asyncfn.ErrClosed
	}
	p = p.Normalized()
	var fb asyncfn.OverviewBuilder
	o := &asyncfn.Overview{Window: p.Window, Failures: []asyncfn.FailureOverview{}}
	var fn, state string
	var n, sum int
	var at time.Time
	var b pgx.Batch
	b.Queue(s.ov.unfinished, now).Query(func(rows pgx.Rows) error {
		_, err := pgx.ForEachRow(rows, []any{&fn, &state, &n, &at}, func() error {
			if asyncfn.State(state) == asyncfn.Queued {
				fb.Queued(fn, n, at.UTC())
			} else {
				fb.Function(fn).Running += n
			}
			return nil
		})
		return err
	})
	b.Queue(s.ov.finished, now, now.Add(-p.Window)).Query(func(rows pgx.Rows) error {
		_, err := pgx.ForEachRow(rows, []any{&fn, &state, &n, &sum}, func() error {
			f := fb.Function(fn)
			if asyncfn.State(state) == asyncfn.Succeeded {
				f.Succeeded += n
				f.Rows += sum
			} else {
				f.Failed += n
			}
			return nil
		})
		return err
	})
	var f asyncfn.FailureOverview
	var kind string
	b.Queue(s.ov.failures, now, p.Failures).Query(func(rows pgx.Rows) error {
		_, err := pgx.ForEachRow(rows, []any{&f.Key.Function, &f.Key.BatchID, &f.QueryID, &f.Attempts, &at, &kind, &f.Error.Message}, func() error {
			f.FinishedAt, f.Error.Kind = at.UTC(), asyncfn.ErrorKind(kind)
			o.Failures = append(o.Failures, f)
			return nil
		})
		return err
	})
	if err := s.pool.SendBatch(ctx, &b).Close(); err != nil {
		return nil, s.err(err)
	}
	o.Functions = fb.Build()
	return o, nil
}
