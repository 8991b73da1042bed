package memory_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/memory"
)

// BenchmarkClaimAmongFinished measures the work of a batch queued (a create, a count of
// the queue, a claim and a finish) in a store that also keeps 100,000 finished batches,
// as it does for their grace period under a steady load of small batches: the finished
// ones should cost it nothing.
func BenchmarkClaimAmongFinished(b *testing.B) {
	ctx := context.Background()
	now := time.Now()
	s := memory.New()
	batch := func(id string) *asyncfn.Batch {
		payload := []byte(`{"data":[[0,"x"]]}`)
		return &asyncfn.Batch{Key: asyncfn.Key{Function: "f", BatchID: id}, State: asyncfn.Queued, Payload: payload,
			Digest: asyncfn.Digest(payload), Rows: 1, MaxAttempts: 1, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	for i := range 100_000 {
		done := batch(fmt.Sprint("done-", i))
		done.State, done.Payload, done.Result, done.FinishedAt = asyncfn.Succeeded, nil, []byte(`{"data":[[0,"x"]]}`), now
		if _, err := s.Create(ctx, done); err != nil {
			b.Fatal(err)
		}
	}
	params := asyncfn.ClaimParams{Owner: "w", Now: now, Lease: time.Minute, Limit: 1}
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.Create(ctx, batch(fmt.Sprint("q-", i))); err != nil {
			b.Fatal(err)
		}
		if n, err := s.CountQueued(ctx, now); err != nil || n != 1 {
			b.Fatalf("CountQueued = %d, %v; want 1", n, err)
		}
		got, err := s.Claim(ctx, params)
		if err != nil || len(got) != 1 {
			b.Fatalf("Claim = %d batches, %v; want 1", len(got), err)
		}
		if err := s.Finish(ctx, got[0].Key, "w", asyncfn.Succeed(now, []byte(`{"data":[[0,"x"]]}`))); err != nil {
			b.Fatal(err)
		}
	}
}
