package asyncfn_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/memory"
)

var discard = slog.New(slog.DiscardHandler)

// newService returns a front end over a fresh memory store, with cfg applied over the
// defaults by edit.
func newService(t *testing.T, edit func(*asyncfn.ServiceConfig), fns ...asyncfn.Function) (*asyncfn.Service, *memory.Store, *asyncfn.Hub) {
	t.Helper()
	reg, err := asyncfn.NewRegistry(fns...)
	if err != nil {
		t.Fatal(err)
	}
	store := memory.New()
	t.Cleanup(func() { store.Close() })
	cfg := asyncfn.DefaultServiceConfig()
	cfg.SyncWait, cfg.PollWait = 0, 0
	if edit != nil {
		edit(&cfg)
	}
	hub := asyncfn.NewHub()
	svc, err := asyncfn.NewService(store, reg, hub, discard, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return svc, store, hub
}

func request(fn, id, payload string) asyncfn.Request {
	rows, err := asyncfn.ParseRows([]byte(payload))
	if err != nil {
		panic(err)
	}
	return asyncfn.Request{Key: asyncfn.Key{Function: fn, BatchID: id}, QueryID: "q-" + id, Payload: []byte(payload), Rows: rows}
}

// notified reports whether c has received a done event.
func notified(c <-chan *asyncfn.Batch) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func TestHubWaitDone(t *testing.T) {
	t.Parallel()
	h := asyncfn.NewHub()
	key := asyncfn.Key{Function: "f", BatchID: "1"}
	other := asyncfn.Key{Function: "f", BatchID: "2"}
	c1, unsub1 := h.WaitDone(key)
	c2, unsub2 := h.WaitDone(key)
	defer unsub2()
	c3, unsub3 := h.WaitDone(other)
	defer unsub3()

	h.Publish(asyncfn.Event{Key: key, State: asyncfn.Queued})
	h.Publish(asyncfn.Event{Key: key, State: asyncfn.Running})
	if notified(c1) || notified(c2) {
		t.Fatal("WaitDone's channel closed on an event that is not done")
	}
	unsub1()
	h.Publish(asyncfn.Event{Key: key, State: asyncfn.Succeeded, Batch: &asyncfn.Batch{Key: key, State: asyncfn.Succeeded}})
	if notified(c1) {
		t.Error("an unsubscribed waiter was notified")
	}
	if !notified(c2) {
		t.Error("WaitDone's channel not closed on a done event")
	}
	if notified(c3) {
		t.Error("a waiter of another key was notified")
	}
	h.Publish(asyncfn.Event{Key: other, State: asyncfn.Failed})
	if !notified(c3) {
		t.Error("WaitDone's channel not closed on a failed event")
	}
	// Publishing again, and unsubscribing after the close, is harmless.
	h.Publish(asyncfn.Event{Key: key, State: asyncfn.Succeeded})
	unsub2()
	unsub1()

	// A new waiter after the event waits for the next one.
	c4, unsub4 := h.WaitDone(key)
	defer unsub4()
	if notified(c4) {
		t.Error("a new waiter saw an old event")
	}
}

func TestHubQueued(t *testing.T) {
	t.Parallel()
	h := asyncfn.NewHub()
	c, unsub := h.Queued()
	h.Publish(asyncfn.Event{Key: asyncfn.Key{Function: "f", BatchID: "1"}, State: asyncfn.Queued})
	h.Publish(asyncfn.Event{Key: asyncfn.Key{Function: "f", BatchID: "2"}, State: asyncfn.Queued}) // coalesced, never blocks
	select {
	case <-c:
	default:
		t.Fatal("no wake-up after a queued event")
	}
	select {
	case <-c:
		t.Fatal("two wake-ups for events published before one receive")
	default:
	}
	h.Publish(asyncfn.Event{Key: asyncfn.Key{Function: "f", BatchID: "1"}, State: asyncfn.Succeeded})
	select {
	case <-c:
		t.Fatal("a done event woke the queued subscribers")
	default:
	}
	unsub()
	h.Publish(asyncfn.Event{State: asyncfn.Queued})
	select {
	case <-c:
		t.Fatal("an unsubscribed channel received a wake-up")
	default:
	}
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		fn   asyncfn.Function
		want string
	}{
		{"empty name", asyncfn.Function{Name: "", Func: asyncfn.Echo}, `function name ""`},
		{"slash", asyncfn.Function{Name: "a/b", Func: asyncfn.Echo}, `function name "a/b"`},
		{"space", asyncfn.Function{Name: "a b", Func: asyncfn.Echo}, `function name "a b"`},
		{"unicode", asyncfn.Function{Name: "é", Func: asyncfn.Echo}, `function name "é"`},
		{"nil func", asyncfn.Function{Name: "f"}, "Func is nil"},
		{"negative timeout", asyncfn.Function{Name: "f", Func: asyncfn.Echo, Timeout: -1}, "must not be negative"},
		{"negative concurrency", asyncfn.Function{Name: "f", Func: asyncfn.Echo, Concurrency: -1}, "must not be negative"},
		{"negative attempts", asyncfn.Function{Name: "f", Func: asyncfn.Echo, MaxAttempts: -1}, "must not be negative"},
		{"negative backoff", asyncfn.Function{Name: "f", Func: asyncfn.Echo, Backoff: -1}, "must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := asyncfn.NewRegistry(tc.fn)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewRegistry error = %v, want one containing %q", err, tc.want)
			}
		})
	}

	_, err := asyncfn.NewRegistry(asyncfn.Function{Name: "f", Func: asyncfn.Echo}, asyncfn.Function{Name: "f", Func: asyncfn.Echo})
	if err == nil || !strings.Contains(err.Error(), "registered twice") {
		t.Errorf("duplicate name: error = %v", err)
	}

	reg, err := asyncfn.NewRegistry(
		asyncfn.Function{Name: "zeta.v2", Func: asyncfn.Echo},
		asyncfn.Function{Name: "A-b_c", Func: asyncfn.Echo, Timeout: time.Second, Concurrency: 3, MaxAttempts: 7, Backoff: time.Millisecond},
	)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(reg.Names(), ","); got != "A-b_c,zeta.v2" {
		t.Errorf("Names = %s", got)
	}
	f, ok := reg.Lookup("zeta.v2")
	if !ok {
		t.Fatal("Lookup of a registered name failed")
	}
	if f.Timeout != asyncfn.DefaultTimeout || f.MaxAttempts != asyncfn.DefaultMaxAttempts || f.Backoff != asyncfn.DefaultBackoff || f.Concurrency != 0 {
		t.Errorf("defaults not applied: %+v", f)
	}
	g, _ := reg.Lookup("A-b_c")
	if g.Timeout != time.Second || g.Concurrency != 3 || g.MaxAttempts != 7 || g.Backoff != time.Millisecond {
		t.Errorf("settings not kept: %+v", g)
	}
	if _, ok := reg.Lookup("nope"); ok {
		t.Error("Lookup of an unknown name succeeded")
	}
}

func TestBackoffFor(t *testing.T) {
	t.Parallel()
	f := asyncfn.Function{Backoff: 10 * time.Millisecond}
	for next, want := range map[int]time.Duration{
		0: 10 * time.Millisecond, 1: 10 * time.Millisecond, 2: 10 * time.Millisecond,
		3: 20 * time.Millisecond, 4: 40 * time.Millisecond, 5: 80 * time.Millisecond,
	} {
		if got := f.BackoffFor(next); got != want {
			t.Errorf("BackoffFor(%d) = %v, want %v", next, got, want)
		}
	}
	// Doubling stops once past an hour: no overflow for absurd attempt counts.
	h := asyncfn.Function{Backoff: 40 * time.Minute}
	if got := h.BackoffFor(1000); got != 80*time.Minute {
		t.Errorf("BackoffFor(1000) = %v, want 80m (capped doubling)", got)
	}
	if got := f.BackoffFor(1 << 30); got <= 0 || got > 2*time.Hour {
		t.Errorf("BackoffFor(huge) = %v", got)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	if asyncfn.RetryableError(nil) != nil {
		t.Error("RetryableError(nil) != nil")
	}
	base := errors.New("throttled")
	r := asyncfn.RetryableError(base)
	if e := asyncfn.AsError(r); e.Kind != asyncfn.Retryable || e.Message != "throttled" {
		t.Errorf("AsError(RetryableError) = %+v", e)
	}
	if !errors.Is(r, base) {
		t.Error("RetryableError does not wrap its error")
	}
	if e := asyncfn.AsError(asyncfn.InvalidInputf("row %d: bad", 3)); e.Kind != asyncfn.InvalidInput || e.Message != "row 3: bad" {
		t.Errorf("AsError(InvalidInputf) = %+v", e)
	}
	if e := asyncfn.AsError(base); e.Kind != asyncfn.Internal || !errors.Is(e, base) {
		t.Errorf("AsError(plain) = %+v", e)
	}
	wrapped := errors.Join(errors.New("ctx"), asyncfn.InvalidInputf("bad."))
	if e := asyncfn.AsError(wrapped); e.Kind != asyncfn.InvalidInput {
		t.Errorf("AsError of a wrapped InvalidInput = %+v", e)
	}
}

func TestPerRow(t *testing.T) {
	t.Parallel()
	fn := asyncfn.PerRow(func(ctx context.Context, args []json.RawMessage) (any, error) {
		if string(args[0]) == `"bad"` {
			return nil, asyncfn.InvalidInputf("bad value.")
		}
		if string(args[0]) == `"boom"` {
			return nil, errors.New("boom")
		}
		return len(args), nil
	})
	rows, _ := asyncfn.ParseRows([]byte(`{"data": [[0, "a", 1], [1, "b"]]}`))
	out, err := fn.Call(context.Background(), rows)
	if err != nil || len(out) != 2 || out[0] != 2 || out[1] != 1 {
		t.Errorf("PerRow = %v, %v", out, err)
	}
	rows, _ = asyncfn.ParseRows([]byte(`{"data": [[0, "a"], [1, "bad"]]}`))
	_, err = fn.Call(context.Background(), rows)
	if e := asyncfn.AsError(err); e.Kind != asyncfn.InvalidInput || e.Message != "row 1: bad value." {
		t.Errorf("PerRow invalid input = %+v", e)
	}
	rows, _ = asyncfn.ParseRows([]byte(`{"data": [[0, "boom"]]}`))
	_, err = fn.Call(context.Background(), rows)
	if e := asyncfn.AsError(err); e.Kind != asyncfn.Internal || e.Message != "boom" {
		t.Errorf("PerRow plain error = %+v", e)
	}
}

func TestEcho(t *testing.T) {
	t.Parallel()
	rows, _ := asyncfn.ParseRows([]byte(`{"data": [[0, "a", 2], [1], [2, null], [3, 1.000]]}`))
	out, err := asyncfn.Echo.Call(context.Background(), rows)
	if err != nil {
		t.Fatal(err)
	}
	res, err := asyncfn.EncodeResult(rows, out)
	if err != nil || string(res) != `{"data":[[0,"a"],[1,null],[2,null],[3,1.000]]}` {
		t.Errorf("Echo = %s, %v", res, err)
	}
}

func TestServiceConfigValidate(t *testing.T) {
	t.Parallel()
	if err := asyncfn.DefaultServiceConfig().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	for name, edit := range map[string]func(*asyncfn.ServiceConfig){
		"retention":  func(c *asyncfn.ServiceConfig) { c.Retention = 0 },
		"grace":      func(c *asyncfn.ServiceConfig) { c.Grace = -1 },
		"sync-wait":  func(c *asyncfn.ServiceConfig) { c.SyncWait = -1 },
		"poll-wait":  func(c *asyncfn.ServiceConfig) { c.PollWait = -1 },
		"max-queued": func(c *asyncfn.ServiceConfig) { c.MaxQueued = 0 },
		"recheck":    func(c *asyncfn.ServiceConfig) { c.Recheck = 0 },
	} {
		cfg := asyncfn.DefaultServiceConfig()
		edit(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), name) {
			t.Errorf("bad %s: Validate = %v, want an error naming it", name, err)
		}
		if _, err := asyncfn.NewService(memory.New(), &asyncfn.Registry{}, asyncfn.NewHub(), discard, cfg); err == nil {
			t.Errorf("bad %s: NewService accepted it", name)
		}
	}
}

func TestServiceAcceptAndPoll(t *testing.T) {
	t.Parallel()
	svc, store, _ := newService(t, nil, asyncfn.Function{Name: "f", Func: asyncfn.Echo, MaxAttempts: 4})
	ctx := context.Background()
	now := time.Now()

	b, err := svc.Accept(ctx, request("f", "1", `{"data":[[0,1]]}`))
	if err != nil || b.State != asyncfn.Queued || b.Payload != nil {
		t.Fatalf("Accept = %+v, %v; want a queued batch without its payload", b, err)
	}
	got, err := store.Get(ctx, b.Key, time.Now(), true)
	if err != nil {
		t.Fatal(err)
	}
	if got.MaxAttempts != 4 || got.QueryID != "q-1" || got.Rows != 1 || string(got.Payload) != `{"data":[[0,1]]}` ||
		got.Digest != asyncfn.Digest(got.Payload) || got.ExpiresAt.Sub(now) < 11*time.Hour {
		t.Errorf("stored batch = %+v", got)
	}

	// Same key, same body: the stored state. Different body: a conflict.
	if b, err := svc.Accept(ctx, request("f", "1", `{"data":[[0,1]]}`)); err != nil || b.State != asyncfn.Queued {
		t.Errorf("repeated Accept = %+v, %v", b, err)
	}
	if _, err := svc.Accept(ctx, request("f", "1", `{"data":[[0,2]]}`)); !errors.Is(err, asyncfn.ErrConflict) {
		t.Errorf("Accept with another body = %v, want ErrConflict", err)
	}
	if _, err := svc.Accept(ctx, request("nope", "1", `{"data":[[0,1]]}`)); !errors.Is(err, asyncfn.ErrUnknownFunction) {
		t.Errorf("Accept of an unknown function = %v", err)
	}
	if _, err := svc.Poll(ctx, asyncfn.Key{Function: "nope", BatchID: "1"}); !errors.Is(err, asyncfn.ErrUnknownFunction) {
		t.Errorf("Poll of an unknown function = %v", err)
	}
	if _, err := svc.Poll(ctx, asyncfn.Key{Function: "f", BatchID: "2"}); !errors.Is(err, asyncfn.ErrNotFound) {
		t.Errorf("Poll of an unknown batch = %v", err)
	}
	if b, err := svc.Poll(ctx, asyncfn.Key{Function: "f", BatchID: "1"}); err != nil || b.State != asyncfn.Queued {
		t.Errorf("Poll = %+v, %v", b, err)
	}
}

// TestServiceHeldPoll: a held poll answers as soon as the batch is done (hub event), and
// delivering the answer starts the grace period.
func TestServiceHeldPoll(t *testing.T) {
	t.Parallel()
	svc, store, hub := newService(t, func(c *asyncfn.ServiceConfig) {
		c.PollWait = time.Minute
		c.Recheck = time.Minute
		c.Grace = time.Minute
	}, asyncfn.Function{Name: "f", Func: asyncfn.Echo})
	ctx := context.Background()
	key := asyncfn.Key{Function: "f", BatchID: "1"}
	if _, err := svc.Accept(ctx, request("f", "1", `{"data":[[0,1]]}`)); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		b   *asyncfn.Batch
		err error
	}
	polled := make(chan answer, 1)
	go func() {
		b, err := svc.Poll(ctx, key)
		polled <- answer{b, err}
	}()
	claimed, err := store.Claim(ctx, asyncfn.ClaimParams{Owner: "w", Now: time.Now(), Lease: time.Minute, Limit: 1})
	if err != nil || len(claimed) != 1 {
		t.Fatalf("Claim = %v, %v", claimed, err)
	}
	if err := store.Finish(ctx, key, "w", asyncfn.Succeed(time.Now(), []byte(`{"data":[[0,1]]}`))); err != nil {
		t.Fatal(err)
	}
	hub.Publish(asyncfn.Event{Key: key, State: asyncfn.Succeeded})
	select {
	case a := <-polled:
		if a.err != nil || a.b.State != asyncfn.Succeeded || string(a.b.Result) != `{"data":[[0,1]]}` {
			t.Fatalf("held Poll = %+v, %v", a.b, a.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a held poll was not answered when its batch finished")
	}
	// The delivery is recorded in the background, soon after the answer.
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := store.Get(ctx, key, time.Now(), false)
		if err != nil {
			t.Fatal(err)
		}
		if !got.DeliveredAt.IsZero() && time.Until(got.ExpiresAt) <= time.Minute {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after delivery: DeliveredAt %v, expires in %v; want the grace of 1m", got.DeliveredAt, time.Until(got.ExpiresAt))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServiceHeldPollCancelled: a held poll returns the unfinished state when its request
// ends.
func TestServiceHeldPollCancelled(t *testing.T) {
	t.Parallel()
	svc, _, _ := newService(t, func(c *asyncfn.ServiceConfig) { c.PollWait = time.Hour }, asyncfn.Function{Name: "f", Func: asyncfn.Echo})
	if _, err := svc.Accept(context.Background(), request("f", "1", `{"data":[[0,1]]}`)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *asyncfn.Batch, 1)
	go func() {
		b, _ := svc.Poll(ctx, asyncfn.Key{Function: "f", BatchID: "1"})
		done <- b
	}()
	cancel()
	select {
	case b := <-done:
		if b == nil || b.State != asyncfn.Queued {
			t.Errorf("cancelled Poll = %+v", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled poll did not return")
	}
}

func TestServiceAdmit(t *testing.T) {
	t.Parallel()
	svc, _, _ := newService(t, func(c *asyncfn.ServiceConfig) { c.MaxQueued = 2 }, asyncfn.Function{Name: "f", Func: asyncfn.Echo})
	ctx := context.Background()
	key := func(id string) asyncfn.Key { return asyncfn.Key{Function: "f", BatchID: id} }
	if _, err := svc.Function("nope"); !errors.Is(err, asyncfn.ErrUnknownFunction) {
		t.Errorf("Function of an unknown function = %v", err)
	}
	for _, id := range []string{"1", "2"} {
		if err := svc.Admit(ctx, key(id)); err != nil {
			t.Fatalf("Admit %s = %v", id, err)
		}
		if _, err := svc.Accept(ctx, request("f", id, `{"data":[[0,`+id+`]]}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.Admit(ctx, key("3")); !errors.Is(err, asyncfn.ErrOverloaded) {
		t.Errorf("Admit past MaxQueued = %v, want ErrOverloaded", err)
	}
	if err := svc.Admit(ctx, key("1")); err != nil {
		t.Errorf("Admit of an accepted batch under overload = %v, want nil", err)
	}
}

// TestServiceConcurrentAccept: many POSTs of one key store one batch; every caller gets
// its state.
func TestServiceConcurrentAccept(t *testing.T) {
	t.Parallel()
	svc, store, _ := newService(t, nil, asyncfn.Function{Name: "f", Func: asyncfn.Echo})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			b, err := svc.Accept(context.Background(), request("f", "1", `{"data":[[0,1]]}`))
			if err == nil && b.State != asyncfn.Queued {
				err = errors.New("state " + string(b.State))
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	st, err := store.Stats(context.Background(), time.Now())
	if err != nil || st.Queued != 1 {
		t.Errorf("Stats = %+v, %v; want one queued batch", st, err)
	}
}

// TestServiceLocalRun: a POST that may wait hands its batch to a free local worker. A batch
// answered within the budget never has its payload stored; one still running when the
// budget ends has it stored before the 202, so that another process could run it; and a
// retried POST of a batch whose creator died before storing it brings it again.
func TestServiceLocalRun(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var calls sync.Map
	slow := asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
		calls.Store(string(rows[0].Args[0]), true)
		if string(rows[0].Args[0]) == `"slow"` {
			<-release
		}
		return asyncfn.Echo.Call(ctx, rows)
	})
	store := memory.New()
	t.Cleanup(func() { store.Close() })
	svc, _ := atOnce(t, store, pollEvery(10*time.Millisecond), asyncfn.Function{Name: "f", Func: slow})
	ctx := context.Background()

	b, err := svc.Accept(ctx, request("f", "quick", `{"data":[[0,"quick"]]}`))
	if err != nil || b.State != asyncfn.Succeeded || string(b.Result) != `{"data":[[0,"quick"]]}` {
		t.Fatalf("quick batch = %+v, %v; want answered on the POST", b, err)
	}
	if stored, _ := store.Get(ctx, b.Key, time.Now(), true); stored.Payload != nil {
		t.Errorf("a batch answered on its POST stored its payload %q", stored.Payload)
	}

	b, err = svc.Accept(ctx, request("f", "slow", `{"data":[[0,"slow"]]}`))
	if err != nil || b.State != asyncfn.Running {
		t.Fatalf("slow batch = %+v, %v; want running after the budget", b, err)
	}
	if stored, _ := store.Get(ctx, b.Key, time.Now(), true); string(stored.Payload) != `{"data":[[0,"slow"]]}` {
		t.Errorf("a batch acknowledged while running has payload %q stored, want its body", stored.Payload)
	}
	close(release)

	// A creator that died running a batch from memory: claimed, no payload, lease over.
	dead := &asyncfn.Batch{Key: asyncfn.Key{Function: "f", BatchID: "orphan"}, State: asyncfn.Running,
		Digest: asyncfn.Digest([]byte(`{"data":[[0,"orphan"]]}`)), Rows: 1, MaxAttempts: 3, Attempts: 1,
		Owner: "dead", CreatedAt: time.Now(), StartedAt: time.Now(), LeaseUntil: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	if _, err := store.Create(ctx, dead); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the pool looks for work: it must find nothing runnable
	if _, ran := calls.Load(`"orphan"`); ran {
		t.Fatal("a batch without its payload was run")
	}
	if _, err := svc.Accept(ctx, request("f", "orphan", `{"data":[[0,"orphan"]]}`)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := store.Get(ctx, dead.Key, time.Now(), false)
		if err == nil && got.State == asyncfn.Succeeded && string(got.Result) == `{"data":[[0,"orphan"]]}` && got.Attempts == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the orphan after a retried POST = %+v, %v; want run again and succeeded", got, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
