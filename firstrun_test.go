package asyncfn_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/internal/syncbuf"
	"github.com/asyncfn/asyncfn/memory"
	"github.com/asyncfn/asyncfn/storetest"
)

// exclusive is an edit for atOnce: the store serves this process alone, and the pool
// polls it every 10ms.
func exclusive(s *asyncfn.ServiceConfig, p *asyncfn.PoolConfig) {
	s.Exclusive, p.PollInterval = true, 10*time.Millisecond
}

// gated returns a function that counts its calls and echoes once gate is closed.
func gated(calls *atomic.Int32, gate <-chan struct{}) asyncfn.Func {
	return asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
		calls.Add(1)
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return asyncfn.Echo.Call(ctx, rows)
	})
}

// storedAs waits until the store holds the batch at key in state, and returns it with its
// payload.
func storedAs(t *testing.T, s asyncfn.Store, key asyncfn.Key, state asyncfn.State) *asyncfn.Batch {
	t.Helper()
	var b *asyncfn.Batch
	waitFor(t, fmt.Sprintf("the batch stored %s", state), func() bool {
		var err error
		b, err = s.Get(context.Background(), key, time.Now(), true)
		return err == nil && b.State == state
	})
	return b
}

// TestRunFirstStoresOnce: on a store of this process alone, a batch run at once is
// stored after its answer in one write, created finished and delivered (no Finish, no
// MarkDelivered), and read once before it runs to find an earlier batch of its key.
func TestRunFirstStoresOnce(t *testing.T) {
	t.Parallel()
	faulty := storetest.NewFaulty(memory.New())
	svc, _ := atOnce(t, faulty, exclusive, asyncfn.Function{Name: "f", Func: asyncfn.Echo})
	const n = 50
	for i := range n {
		body := fmt.Sprintf(`{"data":[[0,"row %d"]]}`, i)
		b, err := svc.Accept(context.Background(), request("f", fmt.Sprint("b", i), body))
		if err != nil || b.State != asyncfn.Succeeded || string(b.Result) != body {
			t.Fatalf("POST %d = %+v, %v; want answered with its rows", i, b, err)
		}
	}
	for i := range n {
		b := storedAs(t, faulty.Store, asyncfn.Key{Function: "f", BatchID: fmt.Sprint("b", i)}, asyncfn.Succeeded)
		if b.DeliveredAt.IsZero() || b.Payload != nil || b.Attempts != 1 {
			t.Errorf("batch %d stored as %+v; want delivered, without its payload, one attempt", i, b)
		}
	}
	for op, want := range map[storetest.Op]int{storetest.OpCreate: n, storetest.OpFinish: 0, storetest.OpSavePayload: 0, storetest.OpMarkDelivered: 0} {
		if got := faulty.Calls(op); got != want {
			t.Errorf("%s called %d times for %d batches, want %d", op, got, n, want)
		}
	}
}

// TestRunFirstRetriedPOST: a POST retried while its batch runs before it is stored does
// not run it again: it waits for the batch to be stored and is answered from it; one with
// another body under the key is a conflict. Without the fix the store did not know the key
// yet, and the retry ran the batch a second time.
func TestRunFirstRetriedPOST(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	gate := make(chan struct{})
	faulty := storetest.NewFaulty(memory.New())
	svc, _ := atOnce(t, faulty, exclusive, asyncfn.Function{Name: "f", Func: gated(&calls, gate)})
	ctx := context.Background()
	const body = `{"data":[[0,"x"]]}`
	type reply struct {
		b   *asyncfn.Batch
		err error
	}
	first, retry := make(chan reply, 1), make(chan reply, 1)
	go func() { b, err := svc.Accept(ctx, request("f", "b", body)); first <- reply{b, err} }()
	waitFor(t, "the function to start", func() bool { return calls.Load() == 1 })
	go func() { b, err := svc.Accept(ctx, request("f", "b", body)); retry <- reply{b, err} }()
	time.Sleep(50 * time.Millisecond) // the retry would have started the function by now
	close(gate)
	for name, c := range map[string]chan reply{"POST": first, "retried POST": retry} {
		if r := <-c; r.err != nil || r.b.State != asyncfn.Succeeded || string(r.b.Result) != body {
			t.Errorf("%s = %+v, %v; want answered with its rows", name, r.b, r.err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the function ran %d times for one batch POSTed twice, want 1", n)
	}
	if _, err := svc.Accept(ctx, request("f", "b", `{"data":[[0,"other"]]}`)); !errors.Is(err, asyncfn.ErrConflict) {
		t.Errorf("POST of another body under the key = %v, want ErrConflict", err)
	}
}

// TestRunFirstRecordedAfterOutage: a batch whose record the store refuses for a while
// (an outage) is still answered on its POST; a POST retried meanwhile waits rather than
// run it again, and is answered from the store once the record lands.
func TestRunFirstRecordedAfterOutage(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	faulty := storetest.NewFaulty(memory.New())
	svc, _ := atOnce(t, faulty, exclusive, asyncfn.Function{Name: "f", Func: counting(&calls, asyncfn.Echo)})
	ctx := context.Background()
	const body = `{"data":[[0,"x"]]}`
	faulty.Fail(errOutage, storetest.OpCreate)
	b, err := svc.Accept(ctx, request("f", "b", body))
	if err != nil || b.State != asyncfn.Succeeded || string(b.Result) != body {
		t.Fatalf("POST while the store is out = %+v, %v; want answered with its rows", b, err)
	}
	retried := make(chan *asyncfn.Batch, 1)
	go func() {
		dup, err := svc.Accept(ctx, request("f", "b", body))
		if err != nil {
			t.Errorf("retried POST: %v", err)
		}
		retried <- dup
	}()
	waitFor(t, "the record tried again", func() bool { return faulty.Calls(storetest.OpCreate) >= 3 })
	select {
	case dup := <-retried:
		t.Fatalf("retried POST answered %+v before the batch was stored", dup)
	default:
	}
	faulty.Heal()
	if dup := <-retried; dup == nil || dup.State != asyncfn.Succeeded || string(dup.Result) != body {
		t.Fatalf("retried POST = %+v; want answered from the store with its rows", dup)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the function ran %d times, want 1", n)
	}
}

// TestRunFirstPastSyncWait: a batch still running when its POST's budget ends is stored
// running, with its payload, before the 202; its heartbeat then keeps the lease, which
// here is shorter than the budget, so that no other worker takes it, and it finishes once.
// Without the fix the heartbeat counted the lease from the start of the run, found it
// over before the batch was stored, and stopped the run.
func TestRunFirstPastSyncWait(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	gate := make(chan struct{})
	faulty := storetest.NewFaulty(memory.New())
	svc, _ := atOnce(t, faulty, func(s *asyncfn.ServiceConfig, p *asyncfn.PoolConfig) {
		exclusive(s, p)
		s.SyncWait, p.Lease = 1500*time.Millisecond, time.Second
	}, asyncfn.Function{Name: "f", Func: gated(&calls, gate)})
	ctx := context.Background()
	const body = `{"data":[[0,"x"]]}`
	b, err := svc.Accept(ctx, request("f", "b", body))
	if err != nil || b.State != asyncfn.Running {
		t.Fatalf("POST of a slow batch = %+v, %v; want running (202)", b, err)
	}
	stored, err := faulty.Store.Get(ctx, b.Key, time.Now(), true)
	if err != nil || stored.State != asyncfn.Running || string(stored.Payload) != body {
		t.Fatalf("stored after the 202: %+v, %v; want running with its payload", stored, err)
	}
	time.Sleep(2500 * time.Millisecond) // two leases and a half
	close(gate)
	if got := storedAs(t, faulty.Store, b.Key, asyncfn.Succeeded); string(got.Result) != body || got.Attempts != 1 {
		t.Errorf("finished as %+v; want its rows, after one attempt", got)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the function ran %d times, want 1", n)
	}
}

// TestRunFirstHandedBack: a batch running before it is stored when its process shuts down
// is stored queued with its payload, for the next process to run.
func TestRunFirstHandedBack(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	store := memory.New()
	svc, pool := atOnce(t, store, func(s *asyncfn.ServiceConfig, p *asyncfn.PoolConfig) {
		exclusive(s, p)
		p.ShutdownTimeout = 0
	}, asyncfn.Function{Name: "f", Func: gated(&calls, make(chan struct{}))})
	ctx := context.Background()
	const body = `{"data":[[0,"x"]]}`
	accepted := make(chan *asyncfn.Batch, 1)
	go func() { b, _ := svc.Accept(ctx, request("f", "b", body)); accepted <- b }()
	waitFor(t, "the function to start", func() bool { return calls.Load() == 1 })
	pool.Stop()
	if b := <-accepted; b == nil || b.State.Done() {
		t.Fatalf("POST of a batch handed back = %+v; want it unfinished (202)", b)
	}
	got := storedAs(t, store, asyncfn.Key{Function: "f", BatchID: "b"}, asyncfn.Queued)
	if string(got.Payload) != body || got.Attempts != 0 {
		t.Errorf("handed back as %+v; want queued with its payload, the attempt not counted", got)
	}
}

// TestRunFirstCheckpointsCreated: a function that saves rows as it goes needs its batch in
// the store while it runs: it is created before it runs, store alone or not.
func TestRunFirstCheckpointsCreated(t *testing.T) {
	t.Parallel()
	faulty := storetest.NewFaulty(memory.New())
	var created atomic.Int32
	fn := asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
		created.Store(int32(faulty.Calls(storetest.OpCreate)))
		return asyncfn.Echo.Call(ctx, rows)
	})
	svc, _ := atOnce(t, faulty, exclusive, asyncfn.Function{Name: "f", Func: fn, Checkpoint: asyncfn.CheckpointConfig{Rows: 1}})
	if b, err := svc.Accept(context.Background(), request("f", "b", `{"data":[[0,"x"]]}`)); err != nil || b.State != asyncfn.Succeeded {
		t.Fatalf("POST = %+v, %v", b, err)
	}
	if n := created.Load(); n != 1 {
		t.Errorf("the store had %d creates when the function ran, want 1", n)
	}
}

// creatingGate is a store whose Create of a batch run before it was stored (one created
// finished) waits until open is closed.
type creatingGate struct {
	asyncfn.Store
	open    chan struct{}
	waiting atomic.Int32
}

func (s *creatingGate) Create(ctx context.Context, b *asyncfn.Batch) (*asyncfn.Batch, error) {
	if b.State.Done() {
		s.waiting.Add(1)
		<-s.open
	}
	return s.Store.Create(ctx, b)
}

// TestRunFirstBoundsUnstored: batches run faster than the store takes them do not pile up
// in memory: past a budget of bytes waiting to be stored, the workers wait, and the
// POSTs with them. Without the fix every batch ran and waited in memory for the store:
// all 30 of them here. Not parallel: its megabytes, under the race detector, would starve
// the heartbeats of other tests.
func TestRunFirstBoundsUnstored(t *testing.T) {
	var calls atomic.Int32
	store := &creatingGate{Store: memory.New(), open: make(chan struct{})}
	open := sync.OnceFunc(func() { close(store.open) })
	svc, _ := atOnce(t, store, func(s *asyncfn.ServiceConfig, p *asyncfn.PoolConfig) {
		exclusive(s, p)
		s.SyncWait, p.Concurrency = 5*time.Second, 4 // each runs within its POST's budget
	}, asyncfn.Function{Name: "f", Func: counting(&calls, asyncfn.Echo)})
	t.Cleanup(open) // before the pool stops, which waits for the batches to be stored
	const n = 30
	body := `{"data":[[0,"` + strings.Repeat("x", 512<<10) + `"]]}` // half a megabyte each
	done := make(chan error, n)
	for i := range n {
		go func() {
			_, err := svc.Accept(context.Background(), request("f", fmt.Sprint("b", i), body))
			done <- err
		}()
	}
	waitFor(t, "batches waiting to be stored", func() bool { return store.waiting.Load() > 0 })
	time.Sleep(300 * time.Millisecond) // the others would have run by now
	// 8 MB to store holds 7 batches of half a megabyte with their results; then each of
	// the 4 workers holds one more, waiting for room.
	if got := calls.Load(); got > 11 {
		t.Errorf("%d batches of half a megabyte ran while the store took none, want at most 11", got)
	}
	open()
	for range n {
		if err := <-done; err != nil {
			t.Errorf("POST: %v", err)
		}
	}
	for i := range n {
		storedAs(t, store.Store, asyncfn.Key{Function: "f", BatchID: fmt.Sprint("b", i)}, asyncfn.Succeeded)
	}
	if got := calls.Load(); got != n {
		t.Errorf("the function ran %d times for %d batches, want %d", got, n, n)
	}
}

// ambiguousCreate is a store whose first Create of each key commits, then reports the
// outage that hid its answer.
type ambiguousCreate struct {
	asyncfn.Store
	mu   sync.Mutex
	seen map[asyncfn.Key]bool
}

func (s *ambiguousCreate) Create(ctx context.Context, b *asyncfn.Batch) (*asyncfn.Batch, error) {
	old, err := s.Store.Create(ctx, b)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && !s.seen[b.Key] {
		if s.seen == nil {
			s.seen = map[asyncfn.Key]bool{}
		}
		s.seen[b.Key] = true
		return nil, errOutage
	}
	return old, err
}

// TestRunFirstCreateAnswerLost: a create whose commit landed but whose answer was lost is
// found when tried again. After an answer, the batch is stored finished, and no error is
// logged; without the fix, "could not record the outcome of a batch; it will run again
// when its lease expires", which was false. Before a 202, the POST fails (Snowflake tries
// it again) and the batch, stored running, is finished when its attempt ends, once;
// without the fix the attempt's create found a duplicate and gave up, leaving the batch
// running until its lease ran out and it ran a second time.
func TestRunFirstCreateAnswerLost(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	gate := make(chan struct{})
	store := &ambiguousCreate{Store: memory.New()}
	var logs syncbuf.Buffer
	svc, _ := atOnceLogged(t, store, slog.New(slog.NewTextHandler(&logs, nil)), func(s *asyncfn.ServiceConfig, p *asyncfn.PoolConfig) {
		exclusive(s, p)
		s.SyncWait = 200 * time.Millisecond
	}, asyncfn.Function{Name: "f", Func: asyncfn.Echo}, asyncfn.Function{Name: "slow", Func: gated(&calls, gate)})
	const body = `{"data":[[0,"x"]]}`
	if b, err := svc.Accept(context.Background(), request("f", "b", body)); err != nil || b.State != asyncfn.Succeeded {
		t.Fatalf("POST = %+v, %v; want answered", b, err)
	}
	got := storedAs(t, store.Store, asyncfn.Key{Function: "f", BatchID: "b"}, asyncfn.Succeeded)
	if string(got.Result) != body || got.DeliveredAt.IsZero() {
		t.Errorf("stored %+v; want its rows, delivered", got)
	}
	if b, err := svc.Accept(context.Background(), request("slow", "b", body)); !errors.Is(err, asyncfn.ErrUnavailable) {
		t.Fatalf("POST of a slow batch whose create lost its answer = %+v, %v; want unavailable", b, err)
	}
	close(gate)
	got = storedAs(t, store.Store, asyncfn.Key{Function: "slow", BatchID: "b"}, asyncfn.Succeeded)
	if string(got.Result) != body || calls.Load() != 1 {
		t.Errorf("stored %+v after %d calls; want its rows after one call", got, calls.Load())
	}
	if strings.Contains(logs.String(), "it will run again when its lease expires") {
		t.Errorf("a create found after its answer was lost was logged as not recorded:\n%s", logs.String())
	}
}
