package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/asyncfn/asyncfn"
)

// Store returns store with each operation timed (asyncfn_store_operation_duration_seconds)
// and its failures counted (asyncfn_store_errors_total). The contract's expected answers
// (not found, duplicate, conflict, lease lost, not claimable) and cancelled calls are not
// failures. A Notifier store stays a Notifier.
func (m *Metrics) Store(store asyncfn.Store) asyncfn.Store {
	s := &instrumentedStore{Store: store, m: m}
	if n, ok := store.(asyncfn.Notifier); ok {
		return &notifierStore{instrumentedStore: s, n: n}
	}
	return s
}

type instrumentedStore struct {
	asyncfn.Store
	m *Metrics
}

type notifierStore struct {
	*instrumentedStore
	n asyncfn.Notifier
}

func (s *notifierStore) Listen(ctx context.Context, fn func(asyncfn.Event)) error {
	return s.n.Listen(ctx, fn)
}

// expected are the errors the store contract returns as answers, not failures.
var expected = []error{asyncfn.ErrNotFound, asyncfn.ErrDuplicate, asyncfn.ErrConflict,
	asyncfn.ErrLeaseLost, asyncfn.ErrNotClaimable, context.Canceled}

// storeOperations are the operation labels of the store's metrics.
var storeOperations = []string{"create", "get", "claim", "claim_key", "extend", "finish", "checkpoint", "mark_delivered",
	"sweep", "stats", "count_queued", "save_payload", "ping"}

func (s *instrumentedStore) done(op string, began time.Time, err error) {
	s.m.storeTime.WithLabelValues(op).Observe(time.Since(began).Seconds())
	if err == nil {
		return
	}
	for _, e := range expected {
		if errors.Is(err, e) {
			return
		}
	}
	s.m.storeErrors.WithLabelValues(op).Inc()
}

func (s *instrumentedStore) Create(ctx context.Context, b *asyncfn.Batch) (*asyncfn.Batch, error) {
	began := time.Now()
	old, err := s.Store.Create(ctx, b)
	s.done("create", began, err)
	return old, err
}

func (s *instrumentedStore) Get(ctx context.Context, key asyncfn.Key, now time.Time, withPayload bool) (*asyncfn.Batch, error) {
	began := time.Now()
	b, err := s.Store.Get(ctx, key, now, withPayload)
	s.done("get", began, err)
	return b, err
}

func (s *instrumentedStore) Claim(ctx context.Context, p asyncfn.ClaimParams) ([]*asyncfn.Batch, error) {
	began := time.Now()
	bs, err := s.Store.Claim(ctx, p)
	s.done("claim", began, err)
	return bs, err
}

func (s *instrumentedStore) ClaimKey(ctx context.Context, key asyncfn.Key, p asyncfn.ClaimParams) (*asyncfn.Batch, error) {
	began := time.Now()
	b, err := s.Store.ClaimKey(ctx, key, p)
	s.done("claim_key", began, err)
	return b, err
}

func (s *instrumentedStore) Extend(ctx context.Context, key asyncfn.Key, owner string, until time.Time) error {
	began := time.Now()
	err := s.Store.Extend(ctx, key, owner, until)
	s.done("extend", began, err)
	return err
}

func (s *instrumentedStore) Finish(ctx context.Context, key asyncfn.Key, owner string, p asyncfn.FinishParams) error {
	began := time.Now()
	err := s.Store.Finish(ctx, key, owner, p)
	s.done("finish", began, err)
	return err
}

func (s *instrumentedStore) Checkpoint(ctx context.Context, key asyncfn.Key, owner string, now time.Time, rows []asyncfn.SavedRow) error {
	began := time.Now()
	err := s.Store.Checkpoint(ctx, key, owner, now, rows)
	s.done("checkpoint", began, err)
	return err
}

func (s *instrumentedStore) MarkDelivered(ctx context.Context, key asyncfn.Key, now, expiresAt time.Time) error {
	began := time.Now()
	err := s.Store.MarkDelivered(ctx, key, now, expiresAt)
	s.done("mark_delivered", began, err)
	return err
}

func (s *instrumentedStore) Sweep(ctx context.Context, now time.Time, limit int) (int, error) {
	began := time.Now()
	n, err := s.Store.Sweep(ctx, now, limit)
	s.done("sweep", began, err)
	return n, err
}

func (s *instrumentedStore) Stats(ctx context.Context, now time.Time) (asyncfn.Stats, error) {
	began := time.Now()
	st, err := s.Store.Stats(ctx, now)
	s.done("stats", began, err)
	return st, err
}

func (s *instrumentedStore) CountQueued(ctx context.Context, now time.Time) (int, error) {
	began := time.Now()
	n, err := s.Store.CountQueued(ctx, now)
	s.done("count_queued", began, err)
	return n, err
}

func (s *instrumentedStore) SavePayload(ctx context.Context, key asyncfn.Key, now time.Time, payload []byte) error {
	began := time.Now()
	err := s.Store.SavePayload(ctx, key, now, payload)
	s.done("save_payload", began, err)
	return err
}

func (s *instrumentedStore) Ping(ctx context.Context) error {
	began := time.Now()
	err := s.Store.Ping(ctx)
	s.done("ping", began, err)
	return err
}
