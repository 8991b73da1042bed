package postgres_test

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/postgres/pgtest"
)

// BenchmarkClaimFinish measures one batch's trip through the store: Create with a
// 4,096-byte payload, Claim, Finish with a 4,096-byte result, and the Get of a poll.
func BenchmarkClaimFinish(b *testing.B) {
	payload := append(append([]byte(`{"data":[[0,"`), bytes.Repeat([]byte("x"), 4096-18)...), `"]]}`...)
	result := bytes.ReplaceAll(payload, []byte("x"), []byte("y"))
	s := open(b, pgtest.Schema(b))
	var n atomic.Int64
	trip := func(owner string) error {
		i := n.Add(1)
		now := t0.Add(time.Duration(i) * time.Microsecond)
		batch := &asyncfn.Batch{
			Key: asyncfn.Key{Function: "echo", BatchID: fmt.Sprint("b", i)}, State: asyncfn.Queued,
			Payload: payload, Digest: asyncfn.Digest(payload), Rows: 1, MaxAttempts: 3,
			CreatedAt: now, ExpiresAt: now.Add(12 * time.Hour),
		}
		if _, err := s.Create(ctx, batch); err != nil {
			return err
		}
		// In parallel, a claim may find every batch it can see taken by the others (the
		// last one created may be newer than its snapshot): it tries again.
		var got []*asyncfn.Batch
		for len(got) == 0 {
			var err error
			if got, err = s.Claim(ctx, claim(owner, now, 1)); err != nil {
				return err
			}
		}
		key := got[0].Key
		if err := s.Finish(ctx, key, owner, asyncfn.Succeed(now, result)); err != nil {
			return err
		}
		if done, err := s.Get(ctx, key, now, false); err != nil || done.State != asyncfn.Succeeded {
			return fmt.Errorf("Get = %+v, %v", done, err)
		}
		return nil
	}
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if err := trip("w"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		var workers atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			owner := fmt.Sprint("w", workers.Add(1))
			for pb.Next() {
				if err := trip(owner); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkOverview reads the overview of a store holding 100,000 live batches of 5
// functions, created one every 100 ms: 1,000 queued, 1,000 running, 1,960 failed and the
// rest succeeded, 600 of them in the last minute.
func BenchmarkOverview(b *testing.B) {
	dsn := pgtest.Schema(b)
	s := open(b, dsn)
	now := time.Now().UTC().Truncate(time.Microsecond)
	pgtest.Exec(b, dsn, `INSERT INTO batches (function, batch_id, query_id, state, payload, digest, row_count,
			error_kind, error_message, attempts, max_attempts, owner, created_at, finished_at, expires_at)
		SELECT 'f' || (n % 5), 'b' || n, 'q', st, '', 'd', 100, CASE st WHEN 'failed' THEN 'internal' END,
			CASE st WHEN 'failed' THEN 'boom' END, 1, 3, '', c,
			CASE WHEN st IN ('succeeded', 'failed') THEN c + interval '1 second' END, $1::timestamptz + interval '12 hours'
		FROM (SELECT n, $1::timestamptz - (100000 - n) * interval '100 milliseconds' AS c,
			CASE WHEN n % 100 = 0 THEN 'queued' WHEN n % 100 = 1 THEN 'running' WHEN n % 50 = 2 THEN 'failed' ELSE 'succeeded' END AS st
			FROM generate_series(0, 99999) AS n) AS g`, now)
	pgtest.Exec(b, dsn, "ANALYZE batches")
	o, err := s.Overview(ctx, now, asyncfn.OverviewParams{})
	if err != nil {
		b.Fatal(err)
	}
	if t := o.Totals(); t.Queued != 1000 || t.Running != 1000 || t.Succeeded+t.Failed < 500 || len(o.Failures) != asyncfn.DefaultOverviewFailures {
		b.Fatalf("overview of the test data: %+v, %d failures", t, len(o.Failures))
	}
	for b.Loop() {
		if _, err := s.Overview(ctx, now, asyncfn.OverviewParams{}); err != nil {
			b.Fatal(err)
		}
	}
}
