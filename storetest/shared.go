package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
)

// The suites below prove what one store on its own cannot: the contract's promises to
// processes sharing a backend, to the processes an engine notifies, and to callers while
// the backend is out of reach.

// NewPair returns two stores on one backend, as two processes sharing it open them, each
// closed when the test ends. The stores of different tests must not see each other's
// batches.
type NewPair func(t *testing.T) (a, b asyncfn.Store)

// RunShared runs the tests of two stores on one backend: a batch created, claimed or
// finished through one is so through the other, and their concurrent creates, claims and
// sweeps never collide.
func RunShared(t *testing.T, newPair NewPair) {
	tests := []struct {
		name string
		fn   func(t *testing.T, a, b asyncfn.Store)
	}{
		{"SeenThroughTheOther", testSeenThroughTheOther},
		{"CreateConcurrentOnce", testSharedCreateConcurrentOnce},
		{"ClaimConcurrentDisjoint", testSharedClaimConcurrentDisjoint},
		{"ClaimKeyConcurrentOnce", testSharedClaimKeyConcurrentOnce},
		{"SweepConcurrent", testSharedSweepConcurrent},
		{"CheckpointAfterReclaim", testSharedCheckpointAfterReclaim},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, b := newPair(t)
			tt.fn(t, a, b)
		})
	}
}

// A worker whose lease passed to another process saves nothing: its checkpoint is
// ErrLeaseLost, and the new owner's rows are seen through both stores.
func testSharedCheckpointAfterReclaim(t *testing.T, a, b asyncfn.Store) {
	x := newBatch("echo", "reclaimed", t0)
	mustCreate(t, a, x)
	mustClaimKey(t, a, x.Key, "slow", t0)
	mustCheckpoint(t, a, x.Key, "slow", t0, savedRows("slow", 0))
	later := t0.Add(time.Minute)
	wantSaved(t, "the claim through the other store", mustClaimKey(t, b, x.Key, "fast", later).Saved, savedRows("slow", 0))
	err := a.Checkpoint(ctx, x.Key, "slow", later, savedRows("slow", 1))
	wantErr(t, "Checkpoint by the owner that lost the lease", err, asyncfn.ErrLeaseLost)
	mustCheckpoint(t, b, x.Key, "fast", later, savedRows("fast", 2))
	want := append(savedRows("slow", 0), savedRows("fast", 2)...)
	wantSaved(t, "Get through the first store", mustGet(t, a, x.Key, later).Saved, want)
}

// A batch passes between processes at every step of its life: each sees the other's
// creates, leases, retries, results and deliveries.
func testSeenThroughTheOther(t *testing.T, a, b asyncfn.Store) {
	x := newBatch("echo", "shared", t0)
	mustCreate(t, a, x)
	got := mustGet(t, b, x.Key, t0)
	wantState(t, got, asyncfn.Queued)
	if !bytes.Equal(got.Payload, x.Payload) || got.Digest != x.Digest {
		t.Fatalf("batch created through one store reads back through the other as %+v", got)
	}
	old, err := b.Create(ctx, newBatch("echo", "shared", t0.Add(time.Minute)))
	wantErr(t, "Create through the other store of a key created through one", err, asyncfn.ErrDuplicate)
	wantTime(t, "CreatedAt of the batch it returned", old.CreatedAt, t0)

	mustClaimKey(t, b, x.Key, "wb", t0)
	if got, err := a.Claim(ctx, claim("wa", t0.Add(time.Second), 10)); err != nil || len(got) != 0 {
		t.Fatalf("Claim through one store of a batch leased through the other = %v, %v; want nothing", keysOf(got), err)
	}
	_, err = a.ClaimKey(ctx, x.Key, claim("wa", t0.Add(time.Second), 1))
	wantErr(t, "ClaimKey through one store of a batch leased through the other", err, asyncfn.ErrNotClaimable)
	err = a.Finish(ctx, x.Key, "wa", asyncfn.Succeed(t0, []byte(`{"data":[]}`)))
	wantErr(t, "Finish by a worker of one store of a batch leased through the other", err, asyncfn.ErrLeaseLost)
	if err := a.Extend(ctx, x.Key, "wb", t0.Add(time.Minute)); err != nil {
		t.Fatalf("Extend of the owner's lease through the other store: %v", err)
	}

	retry := asyncfn.Retry(t0, &asyncfn.Error{Kind: asyncfn.Retryable, Message: "busy"}, t0.Add(time.Second))
	if err := b.Finish(ctx, x.Key, "wb", retry); err != nil {
		t.Fatalf("Finish (retry): %v", err)
	}
	got = mustGet(t, a, x.Key, t0)
	if got.State != asyncfn.Queued || got.Error == nil || got.Error.Message != "busy" || got.Owner != "" {
		t.Fatalf("batch handed back through one store reads through the other as %+v; want queued with the error busy", got)
	}
	claimed, err := a.Claim(ctx, claim("wa", t0.Add(2*time.Second), 10))
	if err != nil || len(claimed) != 1 || claimed[0].Attempts != 2 || !bytes.Equal(claimed[0].Payload, x.Payload) {
		t.Fatalf("Claim through the other store after the retry = %+v, %v; want the batch at attempt 2 with its payload", claimed, err)
	}
	result := []byte(`{"data":[[0,"one"],[1,"two"]]}`)
	if err := a.Finish(ctx, x.Key, "wa", asyncfn.Succeed(t0.Add(3*time.Second), result)); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	got = mustGet(t, b, x.Key, t0.Add(3*time.Second))
	wantState(t, got, asyncfn.Succeeded)
	if !bytes.Equal(got.Result, result) {
		t.Fatalf("result read through the other store %q, want %q", got.Result, result)
	}

	served := t0.Add(4 * time.Second)
	if err := b.MarkDelivered(ctx, x.Key, served, served.Add(10*time.Minute)); err != nil {
		t.Fatalf("MarkDelivered: %v", err)
	}
	wantTime(t, "DeliveredAt read through the other store", mustGet(t, a, x.Key, served).DeliveredAt, served)
	for i, s := range []asyncfn.Store{a, b} {
		if st, err := s.Stats(ctx, served); err != nil || st != (asyncfn.Stats{Succeeded: 1}) {
			t.Fatalf("Stats of store %d = %+v, %v; want the one succeeded batch", i, st, err)
		}
	}
}

func testSharedCreateConcurrentOnce(t *testing.T, a, b asyncfn.Store) {
	// Half the callers send another body: they must get ErrConflict if the winner's body
	// was not theirs, ErrDuplicate if it was.
	bodies := [2]*asyncfn.Batch{newBatch("echo", "race", t0), newBatch("echo", "race", t0)}
	bodies[1].Payload = []byte(`{"data":[[0,"other"]]}`)
	bodies[1].Digest = asyncfn.Digest(bodies[1].Payload)
	type outcome struct {
		digest string
		old    *asyncfn.Batch
		err    error
	}
	const perStore = 6
	var mu sync.Mutex
	var outcomes []outcome
	var wg sync.WaitGroup
	for _, s := range []asyncfn.Store{a, b} {
		for i := range perStore {
			wg.Go(func() {
				mine := *bodies[i%2]
				old, err := s.Create(ctx, &mine)
				mu.Lock()
				outcomes = append(outcomes, outcome{mine.Digest, old, err})
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	stored := mustGet(t, b, bodies[0].Key, t0)
	if got := mustGet(t, a, bodies[0].Key, t0); got.Digest != stored.Digest {
		t.Fatalf("the two stores read different batches for one key: digests %s and %s", got.Digest, stored.Digest)
	}
	created := 0
	for _, o := range outcomes {
		switch {
		case o.err == nil:
			created++
			if o.digest != stored.Digest {
				t.Errorf("a Create that succeeded stored digest %s, but the batch stored has %s", o.digest, stored.Digest)
			}
		case o.digest == stored.Digest:
			wantErr(t, "concurrent Create with the stored body", o.err, asyncfn.ErrDuplicate)
		default:
			wantErr(t, "concurrent Create with another body", o.err, asyncfn.ErrConflict)
		}
		if o.err != nil && (o.old == nil || o.old.Digest != stored.Digest) {
			t.Errorf("a refused concurrent Create returned %+v, want the stored batch", o.old)
		}
	}
	if created != 1 {
		t.Fatalf("%d concurrent Creates of one key through two stores stored %d batches, want 1", len(outcomes), created)
	}
}

func testSharedClaimConcurrentDisjoint(t *testing.T, a, b asyncfn.Store) {
	const batches, workersPerStore = 80, 3
	for i := range batches {
		s := []asyncfn.Store{a, b}[i%2]
		mustCreate(t, s, newBatch("echo", fmt.Sprint("b", i), t0.Add(time.Duration(i)*time.Millisecond)))
	}
	var mu sync.Mutex
	seen := map[string]string{}
	var wg sync.WaitGroup
	for i, s := range []asyncfn.Store{a, b} {
		for w := range workersPerStore {
			owner := fmt.Sprintf("store%d-worker%d", i, w)
			wg.Go(func() { drainClaims(t, s, owner, 4, &mu, seen) })
		}
	}
	wg.Wait()
	if len(seen) != batches {
		t.Fatalf("%d batches claimed through two stores, want each of the %d once", len(seen), batches)
	}
}

func testSharedClaimKeyConcurrentOnce(t *testing.T, a, b asyncfn.Store) {
	x := newBatch("echo", "event", t0)
	mustCreate(t, a, x)
	const perStore = 4
	var mu sync.Mutex
	var winners []string
	var wg sync.WaitGroup
	for i, s := range []asyncfn.Store{a, b} {
		for w := range perStore {
			owner := fmt.Sprintf("store%d-worker%d", i, w)
			wg.Go(func() {
				_, err := s.ClaimKey(ctx, x.Key, claim(owner, t0, 1))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					winners = append(winners, owner)
				case !errors.Is(err, asyncfn.ErrNotClaimable):
					t.Errorf("ClaimKey: error %v, want nil or %v", err, asyncfn.ErrNotClaimable)
				}
			})
		}
	}
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("%d concurrent ClaimKeys through two stores won %d times (%v), want 1", 2*perStore, len(winners), winners)
	}
	for _, s := range []asyncfn.Store{a, b} {
		if got := mustGet(t, s, x.Key, t0); got.Owner != winners[0] || got.Attempts != 1 {
			t.Fatalf("batch owned by %q at attempt %d, want %q at attempt 1", got.Owner, got.Attempts, winners[0])
		}
	}
}

func testSharedSweepConcurrent(t *testing.T, a, b asyncfn.Store) {
	const batches, sweepersPerStore = 80, 2
	for i := range batches {
		x := newBatch("echo", fmt.Sprint("s", i), t0)
		x.ExpiresAt = t0.Add(time.Duration(i+1) * time.Millisecond)
		mustCreate(t, []asyncfn.Store{a, b}[i%2], x)
	}
	live := newBatch("echo", "live", t0)
	mustCreate(t, a, live)
	var mu sync.Mutex
	total := 0
	var wg sync.WaitGroup
	for _, s := range []asyncfn.Store{a, b} {
		for range sweepersPerStore {
			wg.Go(func() {
				for {
					n, err := s.Sweep(ctx, t0.Add(time.Hour), 7)
					if err != nil {
						t.Errorf("concurrent Sweep: %v", err)
						return
					}
					mu.Lock()
					total += n
					mu.Unlock()
					if n == 0 {
						return
					}
				}
			})
		}
	}
	wg.Wait()
	if total != batches {
		t.Fatalf("concurrent sweeps through two stores deleted %d in all, want %d", total, batches)
	}
	mustGet(t, b, live.Key, t0.Add(time.Hour))
}

// RunNotifier runs the tests of asyncfn.Notifier on two stores on one backend, the first of
// which (the listener) implements it: it hears the changes made through either store.
func RunNotifier(t *testing.T, newPair NewPair) {
	tests := []struct {
		name string
		fn   func(t *testing.T, n asyncfn.Notifier, a, b asyncfn.Store)
	}{
		{"ListenHearsEveryStore", testListenHearsEveryStore},
		{"ListenStops", testListenStops},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, b := newPair(t)
			n, ok := a.(asyncfn.Notifier)
			if !ok {
				t.Fatalf("%T does not implement asyncfn.Notifier", a)
			}
			tt.fn(t, n, a, b)
		})
	}
}

// Every change that makes a batch claimable (Queued) or done (Succeeded, Failed) is heard,
// with its key and state, whichever store made it.
func testListenHearsEveryStore(t *testing.T, n asyncfn.Notifier, a, b asyncfn.Store) {
	l := Listen(t, n)
	l.Ready(t, b)

	key := asyncfn.Key{Function: "echo", BatchID: `odd "id"/ü`}
	mustCreate(t, b, newBatch(key.Function, key.BatchID, t0))
	l.Await(t, asyncfn.Event{Key: key, State: asyncfn.Queued})

	mustClaimKey(t, b, key, "w", t0)
	l.Reset()
	retry := asyncfn.Retry(t0, &asyncfn.Error{Kind: asyncfn.Retryable, Message: "busy"}, t0)
	if err := b.Finish(ctx, key, "w", retry); err != nil {
		t.Fatalf("Finish (retry): %v", err)
	}
	l.Await(t, asyncfn.Event{Key: key, State: asyncfn.Queued})

	mustClaimKey(t, b, key, "w", t0)
	if err := b.Finish(ctx, key, "w", asyncfn.Succeed(t0, []byte(`{"data":[[0,1]]}`))); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	l.Await(t, asyncfn.Event{Key: key, State: asyncfn.Succeeded})

	failed := newBatch("echo", "failed", t0)
	mustCreate(t, b, failed)
	mustClaimKey(t, b, failed.Key, "w", t0)
	if err := b.Finish(ctx, failed.Key, "w", asyncfn.Fail(t0, &asyncfn.Error{Kind: asyncfn.InvalidInput, Message: "no."})); err != nil {
		t.Fatalf("Finish (failed): %v", err)
	}
	l.Await(t, asyncfn.Event{Key: failed.Key, State: asyncfn.Failed})

	// A worker that died on its last attempt: the claim that finds it fails it.
	abandoned := newBatch("echo", "abandoned", t0)
	abandoned.MaxAttempts = 1
	mustCreate(t, b, abandoned)
	mustClaimKey(t, b, abandoned.Key, "dies", t0)
	if got, err := b.Claim(ctx, claim("w", t0.Add(time.Hour), 10, "echo")); err != nil || len(got) != 0 {
		t.Fatalf("Claim = %v, %v; want none", keysOf(got), err)
	}
	l.Await(t, asyncfn.Event{Key: abandoned.Key, State: asyncfn.Failed})

	// The listener's own store's changes too.
	own := newBatch("echo", "own", t0)
	mustCreate(t, a, own)
	l.Await(t, asyncfn.Event{Key: own.Key, State: asyncfn.Queued})

	// A key too long for the engine to name may come as an event without a key.
	long := newBatch("echo", strings.Repeat("long", 2000), t0)
	mustCreate(t, b, long)
	l.AwaitMatch(t, fmt.Sprintf("Queued, key %.20s... or none", long.Key), func(e asyncfn.Event) bool {
		return e.State == asyncfn.Queued && (e.Key == long.Key || e.Key == asyncfn.Key{})
	})
}

// Listen returns when its context is cancelled or its store closed, saying which.
func testListenStops(t *testing.T, n asyncfn.Notifier, a, _ asyncfn.Store) {
	l := Listen(t, n)
	l.Ready(t, a)
	wantErr(t, "Listen after its context was cancelled", l.Stop(), context.Canceled)

	l = Listen(t, n)
	l.Ready(t, a)
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantErr(t, "Listen after Close", l.Returned(t, listenWait), asyncfn.ErrClosed)
	wantErr(t, "Listen on a closed store", n.Listen(ctx, func(asyncfn.Event) {}), asyncfn.ErrClosed)
}

// listenWait bounds every wait for an event or for Listen to return: generous, as events
// cross a busy machine, yet a failing test ends.
const listenWait = 10 * time.Second

// Listener records the events of one Listen, for the tests of a Notifier.
type Listener struct {
	mu     sync.Mutex
	events []asyncfn.Event
	more   chan struct{}
	cancel context.CancelFunc
	done   chan struct{} // closed when Listen has returned err
	err    error
}

// Listen calls n.Listen in the background until Stop or the end of the test.
func Listen(t *testing.T, n asyncfn.Notifier) *Listener {
	lctx, cancel := context.WithCancel(ctx)
	l := &Listener{more: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go func() {
		l.err = n.Listen(lctx, l.add)
		close(l.done)
	}()
	t.Cleanup(func() { l.Stop() })
	return l
}

func (l *Listener) add(e asyncfn.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
	select {
	case l.more <- struct{}{}:
	default:
	}
}

// Stop cancels Listen's context and returns what Listen returned.
func (l *Listener) Stop() error {
	l.cancel()
	<-l.done
	return l.err
}

// Returned waits up to d for Listen to return by itself and returns its error; it fails
// the test if Listen is still running then.
func (l *Listener) Returned(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-l.done:
		return l.err
	case <-time.After(d):
		t.Fatalf("Listen did not return within %v", d)
		return nil
	}
}

// Reset forgets the events received so far.
func (l *Listener) Reset() {
	l.mu.Lock()
	l.events = nil
	l.mu.Unlock()
}

// Heard reports whether an event that matches has been received so far.
func (l *Listener) Heard(match func(asyncfn.Event) bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if match(e) {
			return true
		}
	}
	return false
}

// await waits up to d for an event that matches, among all those received so far.
func (l *Listener) await(d time.Duration, match func(asyncfn.Event) bool) bool {
	timeout := time.After(d)
	for !l.Heard(match) {
		select {
		case <-l.more:
		case <-timeout:
			return false
		}
	}
	return true
}

// Await fails the test unless an event with want's key and state arrives (events may be
// repeated, and carry a batch or not).
func (l *Listener) Await(t *testing.T, want asyncfn.Event) {
	t.Helper()
	l.AwaitMatch(t, fmt.Sprintf("%s of %v", want.State, want.Key), func(e asyncfn.Event) bool {
		return e.Key == want.Key && e.State == want.State
	})
}

// AwaitMatch fails the test unless an event that matches, described by what, arrives.
func (l *Listener) AwaitMatch(t *testing.T, what string, match func(asyncfn.Event) bool) {
	t.Helper()
	if !l.await(listenWait, match) {
		l.mu.Lock()
		defer l.mu.Unlock()
		t.Fatalf("no event %s within %v; received %+v", what, listenWait, l.events)
	}
}

// Ready waits until l listens, creating batches of function "probe" through s until l
// hears of one: Listen has no other way to tell that it is in place.
func (l *Listener) Ready(t *testing.T, s asyncfn.Store) {
	t.Helper()
	for i := range 100 {
		mustCreate(t, s, newBatch("probe", fmt.Sprint(time.Now().UnixNano(), "-", i), t0))
		if l.await(100*time.Millisecond, func(e asyncfn.Event) bool { return e.Key.Function == "probe" }) {
			return
		}
	}
	t.Fatal("Listen heard nothing")
}

// NewCut returns a store whose backend the test can cut off, as an outage does (new
// connections refused, open ones cut), and restore. The store is closed when the test
// ends.
type NewCut func(t *testing.T) (s asyncfn.Store, cut, restore func())

// RunUnreachable runs the tests of a store whose backend is out of reach: every method
// fails, at once or by its context's deadline, with an error wrapping ErrUnavailable (an
// answer such as ErrNotFound would be a lie), and once the backend is back nothing the
// store held is lost and the calls that failed succeed when retried.
func RunUnreachable(t *testing.T, newCut NewCut) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s asyncfn.Store, cut, restore func())
	}{
		{"UnreachableIsUnavailable", testUnreachableIsUnavailable},
		{"UnreachableLosesNothing", testUnreachableLosesNothing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, cut, restore := newCut(t)
			tt.fn(t, s, cut, restore)
		})
	}
}

// unreachableTimeout is the deadline of each call on a store cut off: a store may spend it
// retrying, but must return by it.
const unreachableTimeout = 3 * time.Second

// unreachableAnswers are the errors that answer a question about a batch: a store that
// cannot reach its backend must not give one.
var unreachableAnswers = []error{asyncfn.ErrNotFound, asyncfn.ErrDuplicate, asyncfn.ErrConflict,
	asyncfn.ErrLeaseLost, asyncfn.ErrNotClaimable, asyncfn.ErrClosed}

// wantUnavailable runs the calls at once, each with a context of unreachableTimeout, and
// fails the test unless each returns an error wrapping ErrUnavailable and no answer, by
// its deadline (with a margin for a busy machine).
func wantUnavailable(t *testing.T, calls map[string]func(ctx context.Context) error) {
	t.Helper()
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(calls))
	for name, call := range calls {
		go func() {
			cctx, cancel := context.WithTimeout(ctx, unreachableTimeout)
			defer cancel()
			results <- result{name, call(cctx)}
		}()
	}
	hang := time.After(unreachableTimeout + listenWait)
	for range calls {
		select {
		case r := <-results:
			if !errors.Is(r.err, asyncfn.ErrUnavailable) {
				t.Errorf("%s while the backend is cut off: error %v, want one wrapping %v", r.name, r.err, asyncfn.ErrUnavailable)
				continue
			}
			for _, answer := range unreachableAnswers {
				if errors.Is(r.err, answer) {
					t.Errorf("%s while the backend is cut off: error %v is also %v, an answer the store cannot know", r.name, r.err, answer)
				}
			}
		case <-hang:
			t.Fatalf("calls still running %v after their context's deadline of %v: a cut-off store must not hang", listenWait, unreachableTimeout)
		}
	}
}

// retried calls fn until it succeeds, up to 20 times while it fails with ErrUnavailable:
// just after an outage a store may still meet connections the outage cut, and must
// replace them.
func retried(t *testing.T, what string, fn func(ctx context.Context) error) {
	t.Helper()
	var err error
	for range 20 {
		cctx, cancel := context.WithTimeout(ctx, unreachableTimeout)
		err = fn(cctx)
		cancel()
		if !errors.Is(err, asyncfn.ErrUnavailable) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%s after the backend is back: %v", what, err)
	}
}

func testUnreachableIsUnavailable(t *testing.T, s asyncfn.Store, cut, _ func()) {
	queued := newBatch("echo", "queued", t0)
	running := newBatch("echo", "running", t0)
	done := newBatch("echo", "done", t0)
	for _, b := range []*asyncfn.Batch{queued, running, done} {
		mustCreate(t, s, b)
	}
	mustClaimKey(t, s, running.Key, "w", t0)
	mustClaimKey(t, s, done.Key, "w", t0)
	if err := s.Finish(ctx, done.Key, "w", asyncfn.Succeed(t0, []byte(`{"data":[]}`))); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	n, notifier := s.(asyncfn.Notifier)
	var l *Listener
	if notifier {
		l = Listen(t, n)
		l.Ready(t, s)
	}

	cut()
	calls := map[string]func(ctx context.Context) error{
		"Create": func(ctx context.Context) error {
			_, err := s.Create(ctx, newBatch("echo", "new", t0))
			return err
		},
		"Create of a stored key": func(ctx context.Context) error {
			_, err := s.Create(ctx, newBatch("echo", "queued", t0))
			return err
		},
		"Get": func(ctx context.Context) error {
			_, err := s.Get(ctx, queued.Key, t0, true)
			return err
		},
		"Claim": func(ctx context.Context) error {
			_, err := s.Claim(ctx, claim("w2", t0, 10))
			return err
		},
		"ClaimKey": func(ctx context.Context) error {
			_, err := s.ClaimKey(ctx, queued.Key, claim("w2", t0, 1))
			return err
		},
		"SavePayload": func(ctx context.Context) error { return s.SavePayload(ctx, queued.Key, t0, queued.Payload) },
		"Extend":      func(ctx context.Context) error { return s.Extend(ctx, running.Key, "w", t0.Add(time.Minute)) },
		"Finish": func(ctx context.Context) error {
			return s.Finish(ctx, running.Key, "w", asyncfn.Succeed(t0, []byte(`{"data":[]}`)))
		},
		"Checkpoint": func(ctx context.Context) error {
			return s.Checkpoint(ctx, running.Key, "w", t0, []asyncfn.SavedRow{{Number: 0, Value: []byte(`1`)}})
		},
		"MarkDelivered": func(ctx context.Context) error { return s.MarkDelivered(ctx, done.Key, t0, t0.Add(time.Minute)) },
		"Sweep": func(ctx context.Context) error {
			_, err := s.Sweep(ctx, t0.Add(24*time.Hour), 10)
			return err
		},
		"Stats": func(ctx context.Context) error {
			_, err := s.Stats(ctx, t0)
			return err
		},
		"CountQueued": func(ctx context.Context) error {
			_, err := s.CountQueued(ctx, t0)
			return err
		},
		"Ping": s.Ping,
	}
	if notifier {
		calls["Listen"] = func(ctx context.Context) error { return n.Listen(ctx, func(asyncfn.Event) {}) }
		calls["Listen begun before the cut"] = func(ctx context.Context) error {
			select {
			case <-l.done:
				return l.err
			case <-ctx.Done():
				return fmt.Errorf("still listening: %w", ctx.Err())
			}
		}
	}
	wantUnavailable(t, calls)
}

// An outage loses nothing: the batches stored before it are there after it, unchanged by
// the calls that failed meanwhile, and a Create that failed succeeds when retried.
func testUnreachableLosesNothing(t *testing.T, s asyncfn.Store, cut, restore func()) {
	queued := newBatch("echo", "queued", t0)
	running := newBatch("echo", "running", t0)
	mustCreate(t, s, queued)
	mustCreate(t, s, running)
	mustClaimKey(t, s, running.Key, "w", t0)

	cut()
	during := newBatch("echo", "during", t0)
	wantUnavailable(t, map[string]func(ctx context.Context) error{
		"Create": func(ctx context.Context) error {
			_, err := s.Create(ctx, during)
			return err
		},
		"Claim": func(ctx context.Context) error {
			_, err := s.Claim(ctx, claim("w2", t0.Add(time.Second), 10))
			return err
		},
	})
	restore()

	// The failed Create may have been stored after all (its answer lost): then the retry
	// is a duplicate, as a retried POST is.
	retried(t, "Create retried", func(ctx context.Context) error {
		if _, err := s.Create(ctx, newBatch("echo", "during", t0)); !errors.Is(err, asyncfn.ErrDuplicate) {
			return err
		}
		return nil
	})
	get := func(key asyncfn.Key) *asyncfn.Batch {
		var b *asyncfn.Batch
		retried(t, "Get", func(ctx context.Context) (err error) {
			b, err = s.Get(ctx, key, t0.Add(time.Second), true)
			return err
		})
		return b
	}
	if got := get(during.Key); got.State != asyncfn.Queued || !bytes.Equal(got.Payload, during.Payload) {
		t.Fatalf("batch whose Create was retried after the outage = %+v; want it queued with its payload", got)
	}
	var got *asyncfn.Batch
	retried(t, "ClaimKey of a batch queued before the outage", func(ctx context.Context) (err error) {
		got, err = s.ClaimKey(ctx, queued.Key, claim("w2", t0.Add(time.Second), 1))
		return err
	})
	if got.Attempts != 1 || !bytes.Equal(got.Payload, queued.Payload) {
		t.Fatalf("batch queued before the outage claimed at attempt %d with payload %q; want attempt 1 (the failed claims counted none) and %q",
			got.Attempts, got.Payload, queued.Payload)
	}
	retried(t, "Finish of a batch leased before the outage", func(ctx context.Context) error {
		return s.Finish(ctx, running.Key, "w", asyncfn.Succeed(t0.Add(time.Second), []byte(`{"data":[]}`)))
	})
	wantState(t, get(running.Key), asyncfn.Succeeded)
	if n, ok := s.(asyncfn.Notifier); ok {
		l := Listen(t, n)
		l.Ready(t, s)
	}
}
