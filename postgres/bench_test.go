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
		if err := s.Finish(ctx, key, owner, asyncfn.FinishParams{Now: now, Result: result}); err != nil {
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
