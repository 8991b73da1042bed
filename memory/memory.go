// Package memory is an asyncfn.Store kept in one process's memory, for tests and throwaway
// runs: everything is lost when the process ends.
package memory

import (
	"context"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/asyncfn/asyncfn"
)

// Store is an asyncfn.Store guarded by one mutex.
type Store struct {
	mu      sync.Mutex
	batches map[asyncfn.Key]*asyncfn.Batch
	// active holds the batches that are queued or running, the only ones Claim
	// and CountQueued look at: the finished ones, kept for their grace period, are most.
	active map[asyncfn.Key]*asyncfn.Batch
	given  map[asyncfn.Key]int // bytes given to Checkpoint (asyncfn.MaxSavedBytes)
	closed bool
}

var _ asyncfn.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{batches: map[asyncfn.Key]*asyncfn.Batch{}, active: map[asyncfn.Key]*asyncfn.Batch{}, given: map[asyncfn.Key]int{}}
}

// track keeps active up to date with b, stored at key, after a change of its state.
// Callers hold mu.
func (s *Store) track(key asyncfn.Key, b *asyncfn.Batch) {
	if b.State == asyncfn.Queued || b.State == asyncfn.Running {
		s.active[key] = b
	} else {
		delete(s.active, key)
	}
}

// live returns the batch at key unless it is absent or expired at now. Callers hold mu.
func (s *Store) live(key asyncfn.Key, now time.Time) *asyncfn.Batch {
	b := s.batches[key]
	if b == nil || !b.ExpiresAt.After(now) {
		return nil
	}
	return b
}

func clone(b *asyncfn.Batch, withPayload bool) *asyncfn.Batch {
	c := *b
	c.Saved = slices.Clone(b.Saved)
	if !withPayload {
		c.Payload, c.Saved = nil, nil
	}
	if b.Error != nil {
		e := *b.Error
		c.Error = &e
	}
	c.Headers = maps.Clone(b.Headers)
	return &c
}

func (s *Store) Create(ctx context.Context, b *asyncfn.Batch) (*asyncfn.Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, asyncfn.ErrClosed
	}
	if old := s.live(b.Key, b.CreatedAt); old != nil {
		if old.Digest == b.Digest {
			return clone(old, false), asyncfn.ErrDuplicate
		}
		return clone(old, false), asyncfn.ErrConflict
	}
	c := clone(b, true)
	c.Payload, c.Saved = slices.Clone(b.Payload), nil
	s.batches[b.Key] = c
	s.track(b.Key, c)
	delete(s.given, b.Key)
	return nil, nil
}

func (s *Store) Get(ctx context.Context, key asyncfn.Key, now time.Time, withPayload bool) (*asyncfn.Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, asyncfn.ErrClosed
	}
	b := s.live(key, now)
	if b == nil {
		return nil, asyncfn.ErrNotFound
	}
	return clone(b, withPayload), nil
}

// claimable reports whether b can be claimed at now, failing it first if its lease
// expired with no attempts left. Callers hold mu.
func claimable(b *asyncfn.Batch, now time.Time) bool {
	if b.Payload == nil {
		return false
	}
	switch b.State {
	case asyncfn.Queued:
		return !b.RunAfter.After(now)
	case asyncfn.Running:
		if !b.LeaseUntil.Before(now) {
			return false
		}
		if b.Attempts >= b.MaxAttempts {
			b.State = asyncfn.Failed
			b.Error = asyncfn.AbandonedError(b.Attempts)
			b.FinishedAt = now
			b.Owner = ""
			return false
		}
		return true
	}
	return false
}

func lease(b *asyncfn.Batch, p asyncfn.ClaimParams) *asyncfn.Batch {
	b.State = asyncfn.Running
	b.Owner = p.Owner
	b.LeaseUntil = p.Now.Add(p.Lease)
	b.StartedAt = p.Now
	b.Attempts++
	return clone(b, true)
}

func (s *Store) Claim(ctx context.Context, p asyncfn.ClaimParams) ([]*asyncfn.Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, asyncfn.ErrClosed
	}
	var candidates []*asyncfn.Batch
	for key, b := range s.active {
		if !b.ExpiresAt.After(p.Now) {
			continue
		}
		if len(p.Functions) > 0 && !slices.Contains(p.Functions, b.Key.Function) {
			continue
		}
		if claimable(b, p.Now) {
			candidates = append(candidates, b)
		}
		s.track(key, b) // claimable fails an abandoned batch
	}
	sort.Slice(candidates, func(i, j int) bool { return candidates[i].CreatedAt.Before(candidates[j].CreatedAt) })
	if len(candidates) > p.Limit {
		candidates = candidates[:p.Limit]
	}
	out := make([]*asyncfn.Batch, 0, len(candidates))
	for _, b := range candidates {
		out = append(out, lease(b, p))
	}
	return out, nil
}

func (s *Store) ClaimKey(ctx context.Context, key asyncfn.Key, p asyncfn.ClaimParams) (*asyncfn.Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, asyncfn.ErrClosed
	}
	b := s.live(key, p.Now)
	if b == nil {
		return nil, asyncfn.ErrNotFound
	}
	ok := claimable(b, p.Now)
	s.track(key, b) // claimable fails an abandoned batch
	if !ok {
		return nil, asyncfn.ErrNotClaimable
	}
	return lease(b, p), nil
}

func (s *Store) SavePayload(ctx context.Context, key asyncfn.Key, now time.Time, payload []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return asyncfn.ErrClosed
	}
	b := s.live(key, now)
	if b == nil {
		return asyncfn.ErrNotFound
	}
	if b.Payload == nil {
		b.Payload = append([]byte{}, payload...)
	}
	return nil
}

// held returns the running batch at key if owner holds its lease. Callers hold mu.
func (s *Store) held(key asyncfn.Key, owner string) *asyncfn.Batch {
	b := s.batches[key]
	if b == nil || b.State != asyncfn.Running || b.Owner != owner {
		return nil
	}
	return b
}

func (s *Store) Extend(ctx context.Context, key asyncfn.Key, owner string, until time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return asyncfn.ErrClosed
	}
	b := s.held(key, owner)
	if b == nil {
		return asyncfn.ErrLeaseLost
	}
	b.LeaseUntil = until
	return nil
}

func (s *Store) Finish(ctx context.Context, key asyncfn.Key, owner string, p asyncfn.FinishParams) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return asyncfn.ErrClosed
	}
	b := s.held(key, owner)
	if b == nil {
		return asyncfn.ErrLeaseLost
	}
	next := asyncfn.Finished(b, p)
	if next.State.Done() {
		next.Saved = nil
		delete(s.given, key)
	}
	*b = *next
	s.track(key, b)
	return nil
}

func (s *Store) Checkpoint(ctx context.Context, key asyncfn.Key, owner string, now time.Time, rows []asyncfn.SavedRow) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return asyncfn.ErrClosed
	}
	b := s.held(key, owner)
	if b == nil || s.live(key, now) == nil {
		return asyncfn.ErrLeaseLost
	}
	given := s.given[key] + asyncfn.SavedBytes(rows)
	if given > asyncfn.MaxSavedBytes {
		return asyncfn.ErrCheckpointTooLarge
	}
	s.given[key] = given
	b.Saved = asyncfn.AddSaved(b.Saved, rows)
	return nil
}

func (s *Store) MarkDelivered(ctx context.Context, key asyncfn.Key, now, expiresAt time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return asyncfn.ErrClosed
	}
	b := s.live(key, now)
	if b == nil {
		return asyncfn.ErrNotFound
	}
	if b.State.Done() && b.DeliveredAt.IsZero() {
		b.DeliveredAt = now
		if expiresAt.Before(b.ExpiresAt) {
			b.ExpiresAt = expiresAt
		}
	}
	return nil
}

func (s *Store) Sweep(ctx context.Context, now time.Time, limit int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, asyncfn.ErrClosed
	}
	n := 0
	for k, b := range s.batches {
		if n == limit {
			break
		}
		if !b.ExpiresAt.After(now) {
			delete(s.batches, k)
			delete(s.active, k)
			delete(s.given, k)
			n++
		}
	}
	return n, nil
}

func (s *Store) Stats(ctx context.Context, now time.Time) (asyncfn.Stats, error) {
	return s.tally(now, false)
}

func (s *Store) CountQueued(ctx context.Context, now time.Time) (int, error) {
	st, err := s.tally(now, true)
	return st.Queued, err
}

// tally counts by state the batches that live at now: all, or only the active ones.
func (s *Store) tally(now time.Time, activeOnly bool) (asyncfn.Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return asyncfn.Stats{}, asyncfn.ErrClosed
	}
	from := s.batches
	if activeOnly {
		from = s.active
	}
	var st asyncfn.Stats
	for _, b := range from {
		if b.ExpiresAt.After(now) {
			st.Add(b.State, 1)
		}
	}
	return st, nil
}

func (s *Store) Ping(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return asyncfn.ErrClosed
	}
	return nil
}

func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.batches, s.active = nil, nil
	return nil
}
