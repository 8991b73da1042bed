package group

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
)

// fakeTx records the operations a transaction applied; commit publishes them.
type fakeTx struct{ applied []int }

type fakeStore struct {
	mu        sync.Mutex
	committed []int
	commits   int
}

func (s *fakeStore) committer(lanes int) *Committer[*fakeTx] {
	return &Committer[*fakeTx]{
		Begin: func(context.Context) (*fakeTx, error) { return &fakeTx{}, nil },
		Commit: func(_ context.Context, tx *fakeTx) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.committed = append(s.committed, tx.applied...)
			s.commits++
			return nil
		},
		Rollback: func(context.Context, *fakeTx) {},
		Clean:    Outcome,
		Max:      8,
		Lanes:    lanes,
	}
}

// TestDo: every operation is applied exactly once, whatever the others do: an outcome
// (a clean error) keeps the group, an operation that fails or panics makes the others run
// again alone, and only the failed one gets an error.
func TestDo(t *testing.T) {
	for _, lanes := range []int{1, 3} {
		t.Run(fmt.Sprint("lanes=", lanes), func(t *testing.T) { testDo(t, lanes) })
	}
}

func testDo(t *testing.T, lanes int) {
	s := &fakeStore{}
	c := s.committer(lanes)
	c.Linger = time.Millisecond
	const n = 200
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		ctx := context.Background()
		if i%3 == 0 {
			ctx = asyncfn.Unawaited(ctx) // some linger, and are taken along or lead when their time is up
		}
		wg.Go(func() {
			errs[i] = c.Do(ctx, func(tx *fakeTx) error {
				switch i % 10 {
				case 3:
					return asyncfn.ErrLeaseLost
				case 5:
					tx.applied = append(tx.applied, i) // written, then failed: must not commit
					return errors.New("disk full")
				case 7:
					panic("bug")
				}
				tx.applied = append(tx.applied, i)
				return nil
			})
		})
	}
	wg.Wait()
	seen := map[int]int{}
	for _, i := range s.committed {
		seen[i]++
	}
	for i := range n {
		want := 1
		switch i % 10 {
		case 3:
			want = 0
			if !errors.Is(errs[i], asyncfn.ErrLeaseLost) {
				t.Errorf("op %d: %v, want ErrLeaseLost", i, errs[i])
			}
		case 5, 7:
			want = 0
			if errs[i] == nil || errors.Is(errs[i], asyncfn.ErrLeaseLost) {
				t.Errorf("op %d: %v, want its own failure", i, errs[i])
			}
		default:
			if errs[i] != nil {
				t.Errorf("op %d: %v", i, errs[i])
			}
		}
		if seen[i] != want {
			t.Errorf("op %d committed %d times, want %d", i, seen[i], want)
		}
	}
	t.Logf("%d operations in %d commits", n, s.commits)
}

// TestDoCancelled: an operation whose caller gave up before it ran is not applied.
func TestDoCancelled(t *testing.T) {
	s := &fakeStore{}
	c := s.committer(1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := c.Do(ctx, func(tx *fakeTx) error {
		tx.applied = append(tx.applied, 1)
		return nil
	})
	if !errors.Is(err, context.Canceled) || len(s.committed) != 0 {
		t.Fatalf("Do = %v, committed %v; want context.Canceled and nothing", err, s.committed)
	}
}

// TestLater: operations nobody waits for ride along with the next transaction, however
// long their linger; one alone commits when its linger is over.
func TestLater(t *testing.T) {
	s := &fakeStore{}
	c := s.committer(1)
	c.Linger = time.Hour
	apply := func(i int) func(tx *fakeTx) error {
		return func(tx *fakeTx) error {
			tx.applied = append(tx.applied, i)
			return nil
		}
	}
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Go(func() {
			if err := c.Do(asyncfn.Unawaited(context.Background()), apply(i)); err != nil {
				t.Errorf("Do later %d: %v", i, err)
			}
		})
	}
	for queued := 0; queued < 5; {
		time.Sleep(time.Millisecond)
		c.mu.Lock()
		queued = len(c.queue)
		c.mu.Unlock()
	}
	if err := c.Do(context.Background(), apply(5)); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if s.commits != 1 || len(s.committed) != 6 {
		t.Fatalf("%d commits of %v; want the 6 operations in one", s.commits, s.committed)
	}

	c.Linger = 10 * time.Millisecond
	if err := c.Do(asyncfn.Unawaited(context.Background()), apply(6)); err != nil {
		t.Fatal(err)
	}
	if s.commits != 2 || len(s.committed) != 7 {
		t.Fatalf("one alone: %d commits of %v; want it committed alone", s.commits, s.committed)
	}
}
