// Package storebench measures a store on the trips a batch takes through it, many batches
// at once as a loaded service sends them, for the benchmarks of every engine.
package storebench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
)

// Concurrency is the batches in flight, as the service's benchmarks send them.
const Concurrency = 16

// Run measures, Concurrency batches at once, on a store that open returns afresh for
// each of the trips a batch takes:
//
//   - at-once: a batch run by the process that accepts it (serve with the defaults, a
//     small batch): Create claimed without its payload, Finish with its delivery;
//   - run-first: the same on a store of that process alone (SQLite, memory), which
//     stores the batch after it ran: Get of its key, then one Create of the batch
//     finished and delivered, unawaited;
//   - queued: a batch through the queue: Create with its payload, Claim, Finish, the Get
//     of the poll that answers, MarkDelivered.
//
// It runs them for 1-row and 4,096-row batches (sub-benchmarks rows=N), the payload and
// the result in rows of about 60 bytes.
func Run(b *testing.B, open func(b *testing.B) asyncfn.Store) {
	for _, rows := range []int{1, 4096} {
		b.Run(fmt.Sprint("rows=", rows), func(b *testing.B) { run(b, rows, open) })
	}
}

func run(b *testing.B, rows int, open func(b *testing.B) asyncfn.Store) {
	payload := []byte(`{"data":[`)
	for i := range rows {
		if i > 0 {
			payload = append(payload, ',')
		}
		payload = fmt.Appendf(payload, `[%d,"row %d: the quick brown fox jumps over the lazy dog"]`, i, i)
	}
	payload = append(payload, "]}"...)
	ctx := context.Background()
	var n atomic.Int64
	newBatch := func() *asyncfn.Batch {
		now := time.Now()
		return &asyncfn.Batch{
			Key: asyncfn.Key{Function: "echo", BatchID: fmt.Sprint("b", n.Add(1))}, State: asyncfn.Queued,
			Payload: payload, Digest: asyncfn.Digest(payload), Rows: rows, MaxAttempts: 3,
			CreatedAt: now, ExpiresAt: now.Add(12 * time.Hour),
		}
	}
	behind := newBackground(64)
	trips := []struct {
		name string
		trip func(s asyncfn.Store, owner string) error
	}{
		{"at-once", func(s asyncfn.Store, owner string) error {
			bt := claimed(newBatch(), owner)
			if _, err := s.Create(ctx, bt); err != nil {
				return err
			}
			return finish(ctx, s, bt.Key, owner, payload, false)
		}},
		{"run-first", func(s asyncfn.Store, owner string) error {
			bt := claimed(newBatch(), owner)
			if _, err := s.Get(ctx, bt.Key, bt.CreatedAt, false); !errors.Is(err, asyncfn.ErrNotFound) {
				return fmt.Errorf("get of a new key = %v, want ErrNotFound", err)
			}
			// The worker stores the batch as it ran, after its answer, while the next one
			// runs.
			now := time.Now()
			served := asyncfn.Succeed(now, payload)
			served.GraceUntil = now.Add(10 * time.Minute)
			done := asyncfn.Finished(bt, served)
			behind.start(func() error {
				_, err := s.Create(asyncfn.Unawaited(ctx), done)
				return err
			})
			return nil
		}},
		{"queued", func(s asyncfn.Store, owner string) error {
			bt := newBatch()
			if _, err := s.Create(ctx, bt); err != nil {
				return err
			}
			var got []*asyncfn.Batch
			for len(got) == 0 { // the others may have taken every batch this claim could see
				var err error
				if got, err = s.Claim(ctx, asyncfn.ClaimParams{Owner: owner, Now: time.Now(), Lease: time.Minute, Limit: 1}); err != nil {
					return err
				}
			}
			return finish(ctx, s, got[0].Key, owner, payload, true)
		}},
	}
	for _, t := range trips {
		b.Run(t.name, func(b *testing.B) {
			s := open(b)
			var workers atomic.Int64
			b.SetParallelism(max(1, Concurrency/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				owner := fmt.Sprint("w", workers.Add(1))
				for pb.Next() {
					if err := t.trip(s, owner); err != nil {
						b.Error(err)
						return
					}
				}
			})
			if err := behind.wait(); err != nil {
				b.Error(err)
			}
		})
	}
}

// claimed returns b created claimed by owner without its payload, as a batch run at once.
func claimed(b *asyncfn.Batch, owner string) *asyncfn.Batch {
	b.Payload = nil
	b.State, b.Owner, b.Attempts = asyncfn.Running, owner, 1
	b.StartedAt, b.LeaseUntil = b.CreatedAt, b.CreatedAt.Add(time.Minute)
	return b
}

// finish ends a claimed batch as a worker and the front end do: Finish with its delivery,
// unawaited, for a batch answered on its POST; else Finish, the poll's Get, MarkDelivered.
func finish(ctx context.Context, s asyncfn.Store, key asyncfn.Key, owner string, result []byte, poll bool) error {
	now := time.Now()
	done := asyncfn.Succeed(now, result)
	if !poll {
		done.GraceUntil = now.Add(10 * time.Minute)
		return s.Finish(asyncfn.Unawaited(ctx), key, owner, done)
	}
	if err := s.Finish(ctx, key, owner, done); err != nil {
		return err
	}
	if b, err := s.Get(ctx, key, now, false); err != nil || b.State != asyncfn.Succeeded {
		return fmt.Errorf("get after finish = %+v, %v", b, err)
	}
	return s.MarkDelivered(asyncfn.Unawaited(ctx), key, now, now.Add(10*time.Minute))
}

// background runs writes nobody waits for, up to a number at once, as the worker pool
// stores the batches it ran before they were stored.
type background struct {
	slots chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	err   error
}

func newBackground(n int) *background { return &background{slots: make(chan struct{}, n)} }

// start starts write, waiting while n run; its error comes from wait.
func (g *background) start(write func() error) {
	g.slots <- struct{}{}
	g.wg.Go(func() {
		defer func() { <-g.slots }()
		if err := write(); err != nil {
			g.mu.Lock()
			g.err = cmp.Or(g.err, err)
			g.mu.Unlock()
		}
	})
}

// wait waits for the writes started and returns the first error of one.
func (g *background) wait() error {
	g.wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}
