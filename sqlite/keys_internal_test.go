package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func openAt(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func create(t *testing.T, s *Store, key asyncfn.Key, expires time.Time) {
	t.Helper()
	payload := []byte(`{"data":[[0,"x"]]}`)
	b := &asyncfn.Batch{Key: key, State: asyncfn.Queued, Payload: payload, Digest: asyncfn.Digest(payload),
		Rows: 1, MaxAttempts: 1, CreatedAt: t0, ExpiresAt: expires}
	if _, err := s.Create(context.Background(), b); err != nil {
		t.Errorf("Create(%v): %v", key, err)
	}
}

// falsePositives is the share of n keys never stored that the filter may hold.
func falsePositives(s *Store, n int) float64 {
	held := 0
	for i := range n {
		if s.mayHold(asyncfn.Key{Function: "f", BatchID: fmt.Sprint("absent-", i)}) {
			held++
		}
	}
	return float64(held) / float64(n)
}

// TestKeyFilterRebuiltUnderCreates: creates past the filter's capacity, from several
// goroutines, replace it with larger ones built while they go on. What must hold: every
// key created is found by Get as soon as its Create returns and after the rebuilds (a key
// the filter missed would let a retried POST run its batch again), and keys never stored
// are mostly answered without a look-up. Not parallel: it shrinks the smallest filter.
func TestKeyFilterRebuiltUnderCreates(t *testing.T) {
	defer func(n int) { minFilterKeys = n }(minFilterKeys)
	minFilterKeys = 64
	s := openAt(t, filepath.Join(t.TempDir(), "keys.db"))
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				key := asyncfn.Key{Function: "f", BatchID: fmt.Sprintf("w%d-%d", w, i)}
				create(t, s, key, t0.Add(time.Hour))
				if _, err := s.Get(context.Background(), key, t0, false); err != nil {
					t.Errorf("Get(%v) just after its Create: %v", key, err)
				}
			}
		})
	}
	wg.Wait()
	s.keys.wg.Wait()
	for w := range writers {
		for i := range each {
			key := asyncfn.Key{Function: "f", BatchID: fmt.Sprintf("w%d-%d", w, i)}
			if !s.mayHold(key) {
				t.Fatalf("the filter lost %v after its rebuilds", key)
			}
		}
	}
	if c := s.keys.cur.Load().capacity; c < writers*each {
		t.Errorf("filter capacity %d after %d creates; want it rebuilt for at least as many", c, writers*each)
	}
	if fp := falsePositives(s, 10000); fp > 0.05 {
		t.Errorf("%.1f%% of keys never stored may be held; want about 1%%", 100*fp)
	}

	// Swept keys leave the filter at its next rebuild.
	if n, err := s.Sweep(context.Background(), t0.Add(2*time.Hour), writers*each); err != nil || n != writers*each {
		t.Fatalf("Sweep = %d, %v; want every batch", n, err)
	}
	s.rebuildKeys()
	swept := 0
	for w := range writers {
		for i := range each {
			if s.mayHold(asyncfn.Key{Function: "f", BatchID: fmt.Sprintf("w%d-%d", w, i)}) {
				swept++
			}
		}
	}
	if swept > writers*each/10 {
		t.Errorf("%d of %d swept keys still in the filter after a rebuild", swept, writers*each)
	}
}

// TestKeyFilterReadAtOpen: a store opened on a file finds the keys a previous process
// stored; without the scan at Open, their Get said not found and a retried POST ran again.
func TestKeyFilterReadAtOpen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keys.db")
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		create(t, s, asyncfn.Key{Function: "f", BatchID: fmt.Sprint(i)}, t0.Add(time.Hour))
	}
	s.Close()
	s = openAt(t, path)
	for i := range 100 {
		key := asyncfn.Key{Function: "f", BatchID: fmt.Sprint(i)}
		if _, err := s.Get(context.Background(), key, t0, false); err != nil {
			t.Fatalf("Get(%v) after reopening: %v", key, err)
		}
	}
	_, err = s.Get(context.Background(), asyncfn.Key{Function: "f", BatchID: "never"}, t0, false)
	if !errors.Is(err, asyncfn.ErrNotFound) {
		t.Fatalf("Get of a key never stored: %v, want ErrNotFound", err)
	}
	if fp := falsePositives(s, 10000); fp > 0.05 {
		t.Errorf("%.1f%% of keys never stored may be held; want about 1%%", 100*fp)
	}
}
