package asyncfn

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// On a store no other process uses (ServiceConfig.Exclusive), a batch run at once is
// stored when its attempt ends, in the writes that follow its answer, rather than created
// before it runs. What Store.Create's check of the key did before, this process does:
// the POSTs of one key take turns (keyLocks), and the key stays taken while its batch
// runs unstored (firstRun), so that a retried POST waits for the batch to be stored and
// is answered from it, never runs it again.

// keyLocks lets one request at a time decide what a key's POST does, in this process.
type keyLocks struct {
	mu   sync.Mutex
	held map[Key]chan struct{} // closed when the key is let go
}

// lock takes key, waiting while another request holds it, and returns the func that
// lets it go (idempotent); the error of ctx if it ends first.
func (l *keyLocks) lock(ctx context.Context, key Key) (func(), error) {
	for {
		l.mu.Lock()
		busy, taken := l.held[key]
		if !taken {
			if l.held == nil {
				l.held = map[Key]chan struct{}{}
			}
			free := make(chan struct{})
			l.held[key] = free
			l.mu.Unlock()
			return sync.OnceFunc(func() {
				l.mu.Lock()
				delete(l.held, key)
				l.mu.Unlock()
				close(free)
			}), nil
		}
		l.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// wait returns once no request holds key or d has passed, or with the error of ctx if it
// ends first.
func (l *keyLocks) wait(ctx context.Context, key Key, d time.Duration) error {
	l.mu.Lock()
	busy, taken := l.held[key]
	l.mu.Unlock()
	if !taken {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-busy:
	case <-t.C:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	return nil
}

// firstRun is a batch run at once before it is stored. Its attempt's end stores it with
// its outcome (record); if the POST's budget ends first, the POST stores it running with
// its payload before it answers 202 (storeRunning), and the attempt then finishes it as
// any other. The key stays locked until the batch is stored, or given up.
type firstRun struct {
	store   Store
	batch   Batch  // as created claimed, without its payload
	payload []byte // for a batch stored unfinished: any worker may have to run it again
	lease   time.Duration
	unlock  func()

	mu       sync.Mutex
	inStore  bool
	leasedAt time.Time     // when the lease stored began, on this process's clock
	stored   chan struct{} // closed once in the store, or given up
	end      sync.Once
}

func newFirstRun(store Store, b *Batch, payload []byte, lease time.Duration, unlock func()) *firstRun {
	return &firstRun{store: store, batch: *b, payload: payload, lease: lease, unlock: unlock, stored: make(chan struct{})}
}

// storeRunning stores the batch running under a fresh lease, with its payload, unless its
// attempt has stored it already, for the 202 that follows.
func (f *firstRun) storeRunning(ctx context.Context, now time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.inStore {
		return nil
	}
	leasedAt := time.Now()
	b := f.leased(now)
	b.Payload = f.payload
	if err := f.create(ctx, b); err != nil {
		return err
	}
	f.inStore, f.leasedAt = true, leasedAt
	f.letGo()
	return nil
}

// running waits until the batch is in the store and returns when its lease began there,
// for the heartbeat; false if ctx ends first or the batch was never stored.
func (f *firstRun) running(ctx context.Context) (time.Time, bool) {
	select {
	case <-f.stored:
	case <-ctx.Done():
		return time.Time{}, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leasedAt, f.inStore
}

// record stores the end of the batch's attempt, fp: with finish, the way any attempt's
// end is stored, if the POST stored the batch already; else in one create of the batch as
// the attempt left it (Store.Create), its payload included only if it is to run again. A
// store that is unavailable is tried again until ctx ends, as finish does.
func (f *firstRun) record(ctx context.Context, fp FinishParams, finish func() error, log *slog.Logger) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.letGo()
	if f.inStore {
		return finish()
	}
	b := Finished(f.leased(fp.Now), fp)
	if !fp.Outcome.Final() {
		b.Payload = f.payload
	}
	err := untilAvailable(ctx, func() error { return f.create(ctx, b) }, log)
	if errors.Is(err, errStoredRunning) {
		f.inStore = true
		return finish()
	}
	if err != nil {
		return err
	}
	f.inStore = true
	return nil
}

// leased is the batch running under a lease from now, without its payload.
func (f *firstRun) leased(now time.Time) *Batch {
	b := f.batch
	b.LeaseUntil = now.Add(f.lease)
	return &b
}

// errStoredRunning is a create finding the batch running under this process's claim, as
// storeRunning stored it before the 202 in a create whose answer was lost.
var errStoredRunning = errors.New("the batch is stored running already")

// create stores b. A create whose commit landed but whose answer was lost (an outage) is
// found when tried again, since no other process could have made the batch while this one
// holds its key: b's own is success, storeRunning's is errStoredRunning.
func (f *firstRun) create(ctx context.Context, b *Batch) error {
	old, err := f.store.Create(ctx, b)
	if !errors.Is(err, ErrDuplicate) {
		return err
	}
	switch {
	case old.State == b.State && old.Owner == b.Owner && old.Attempts == b.Attempts:
		return nil
	case old.State == Running && old.Owner == f.batch.Owner && old.Attempts == f.batch.Attempts:
		return errStoredRunning
	}
	return err
}

// letGo ends the key's wait: the batch is stored, or given up (its attempt ended without
// storing it, as a panic would end it).
func (f *firstRun) letGo() {
	f.end.Do(func() {
		close(f.stored)
		f.unlock()
	})
}

// unstoredBytes caps the bytes of the batches of one pool run before they were stored
// and waiting to be stored (Pool.run), counting unstoredOverhead more for each.
const (
	unstoredBytes    = 8 << 20
	unstoredOverhead = 16 << 10 // its goroutine, its batch and the rows it ran
)
