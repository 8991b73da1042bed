package storetest

import (
	"context"
	"sync"
	"time"

	"github.com/asyncfn/asyncfn"
)

// Op names a Store method, for Faulty.
type Op string

// The Store's methods. Writes are every method but Get, Stats, CountQueued and Ping.
const (
	OpCreate        Op = "Create"
	OpGet           Op = "Get"
	OpClaim         Op = "Claim"
	OpClaimKey      Op = "ClaimKey"
	OpSavePayload   Op = "SavePayload"
	OpExtend        Op = "Extend"
	OpFinish        Op = "Finish"
	OpCheckpoint    Op = "Checkpoint"
	OpMarkDelivered Op = "MarkDelivered"
	OpSweep         Op = "Sweep"
	OpStats         Op = "Stats"
	OpCountQueued   Op = "CountQueued"
	OpPing          Op = "Ping"
)

// Writes are the operations that change the store.
var Writes = []Op{OpCreate, OpClaim, OpClaimKey, OpSavePayload, OpExtend, OpFinish, OpCheckpoint, OpMarkDelivered, OpSweep}

// Faulty wraps a Store so that a test can make its operations fail on command, as a full
// disk, a read-only file system or a lost database would, and count how often each was
// called. A failing operation returns its error without reaching the store, except a
// Claim told to lose its commit (FailClaimCommit), which reaches it. While any write
// fails, Ping fails with that error, as a store whose Ping probes a write does.
type Faulty struct {
	asyncfn.Store

	mu          sync.Mutex
	fail        map[Op]error
	claimCommit error
	calls       map[Op]int
}

var _ asyncfn.Store = (*Faulty)(nil)

// NewFaulty returns s wrapped, with nothing failing.
func NewFaulty(s asyncfn.Store) *Faulty {
	return &Faulty{Store: s, fail: map[Op]error{}, calls: map[Op]int{}}
}

// Fail makes the operations ops fail with err until Heal.
func (f *Faulty) Fail(err error, ops ...Op) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, op := range ops {
		f.fail[op] = err
	}
}

// FailWrites makes every write fail with err until Heal.
func (f *Faulty) FailWrites(err error) { f.Fail(err, Writes...) }

// FailClaimCommit makes Claim behave as an engine whose commit failed after it read the
// batches it meant to lease, and that returned them anyway: the batches come back leased,
// together with err, while the store is left as a rolled-back transaction leaves it (the
// leases are handed back, the attempts not counted). A worker must run none of them.
func (f *Faulty) FailClaimCommit(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.claimCommit = err
}

// Heal makes every operation succeed again.
func (f *Faulty) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.fail)
	f.claimCommit = nil
}

// Calls returns how many times op was called, failed calls included.
func (f *Faulty) Calls(op Op) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// enter counts a call of op and returns the error it must fail with, if any.
func (f *Faulty) enter(op Op) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	return f.fail[op]
}

func (f *Faulty) Create(ctx context.Context, b *asyncfn.Batch) (*asyncfn.Batch, error) {
	if err := f.enter(OpCreate); err != nil {
		return nil, err
	}
	return f.Store.Create(ctx, b)
}

func (f *Faulty) Get(ctx context.Context, key asyncfn.Key, now time.Time, withPayload bool) (*asyncfn.Batch, error) {
	if err := f.enter(OpGet); err != nil {
		return nil, err
	}
	return f.Store.Get(ctx, key, now, withPayload)
}

func (f *Faulty) Claim(ctx context.Context, p asyncfn.ClaimParams) ([]*asyncfn.Batch, error) {
	if err := f.enter(OpClaim); err != nil {
		return nil, err
	}
	f.mu.Lock()
	lost := f.claimCommit
	f.mu.Unlock()
	bs, err := f.Store.Claim(ctx, p)
	if err != nil || lost == nil {
		return bs, err
	}
	for _, b := range bs {
		if err := f.Store.Finish(ctx, b.Key, p.Owner, asyncfn.HandBack(p.Now, b.RunAfter)); err != nil {
			return bs, err
		}
	}
	return bs, lost
}

func (f *Faulty) ClaimKey(ctx context.Context, key asyncfn.Key, p asyncfn.ClaimParams) (*asyncfn.Batch, error) {
	if err := f.enter(OpClaimKey); err != nil {
		return nil, err
	}
	return f.Store.ClaimKey(ctx, key, p)
}

func (f *Faulty) SavePayload(ctx context.Context, key asyncfn.Key, now time.Time, payload []byte) error {
	if err := f.enter(OpSavePayload); err != nil {
		return err
	}
	return f.Store.SavePayload(ctx, key, now, payload)
}

func (f *Faulty) Extend(ctx context.Context, key asyncfn.Key, owner string, until time.Time) error {
	if err := f.enter(OpExtend); err != nil {
		return err
	}
	return f.Store.Extend(ctx, key, owner, until)
}

func (f *Faulty) Finish(ctx context.Context, key asyncfn.Key, owner string, p asyncfn.FinishParams) error {
	if err := f.enter(OpFinish); err != nil {
		return err
	}
	return f.Store.Finish(ctx, key, owner, p)
}

func (f *Faulty) Checkpoint(ctx context.Context, key asyncfn.Key, owner string, now time.Time, rows []asyncfn.SavedRow) error {
	if err := f.enter(OpCheckpoint); err != nil {
		return err
	}
	return f.Store.Checkpoint(ctx, key, owner, now, rows)
}

func (f *Faulty) MarkDelivered(ctx context.Context, key asyncfn.Key, now, expiresAt time.Time) error {
	if err := f.enter(OpMarkDelivered); err != nil {
		return err
	}
	return f.Store.MarkDelivered(ctx, key, now, expiresAt)
}

func (f *Faulty) Sweep(ctx context.Context, now time.Time, limit int) (int, error) {
	if err := f.enter(OpSweep); err != nil {
		return 0, err
	}
	return f.Store.Sweep(ctx, now, limit)
}

func (f *Faulty) Stats(ctx context.Context, now time.Time) (asyncfn.Stats, error) {
	if err := f.enter(OpStats); err != nil {
		return asyncfn.Stats{}, err
	}
	return f.Store.Stats(ctx, now)
}

func (f *Faulty) CountQueued(ctx context.Context, now time.Time) (int, error) {
	if err := f.enter(OpCountQueued); err != nil {
		return 0, err
	}
	return f.Store.CountQueued(ctx, now)
}

// Ping fails with the error of a failing write, if any, or of Ping itself.
func (f *Faulty) Ping(ctx context.Context) error {
	if err := f.enter(OpPing); err != nil {
		return err
	}
	f.mu.Lock()
	var writeErr error
	for _, op := range Writes {
		if err := f.fail[op]; err != nil {
			writeErr = err
			break
		}
	}
	f.mu.Unlock()
	if writeErr != nil {
		return writeErr
	}
	return f.Store.Ping(ctx)
}
