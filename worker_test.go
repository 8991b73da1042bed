package asyncfn_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	asyncfnhttp "github.com/asyncfn/asyncfn/http"
	"github.com/asyncfn/asyncfn/memory"
	"github.com/asyncfn/asyncfn/sqlite"
)

// lib is a service, its HTTP front end and (once started) a pool over one store, built
// from the library's parts as a user embedding them would.
type lib struct {
	t     *testing.T
	store asyncfn.Store
	reg   *asyncfn.Registry
	hub   *asyncfn.Hub
	svc   *asyncfn.Service
	srv   *httptest.Server
	pool  *asyncfn.Pool
}

func newLib(t *testing.T, store asyncfn.Store, fns ...asyncfn.Function) *lib {
	t.Helper()
	reg, err := asyncfn.NewRegistry(fns...)
	if err != nil {
		t.Fatal(err)
	}
	cfg := asyncfn.DefaultServiceConfig()
	cfg.SyncWait, cfg.PollWait, cfg.Recheck = 0, 0, 20*time.Millisecond
	hub := asyncfn.NewHub()
	svc, err := asyncfn.NewService(store, reg, hub, discard, cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(asyncfnhttp.NewHandler(svc, discard, asyncfnhttp.Config{}))
	t.Cleanup(srv.Close)
	return &lib{t: t, store: store, reg: reg, hub: hub, svc: svc, srv: srv}
}

// startPool starts a pool with the given lease; it is stopped at cleanup.
func (l *lib) startPool(lease time.Duration, edit func(*asyncfn.PoolConfig)) *asyncfn.Pool {
	l.t.Helper()
	cfg := asyncfn.DefaultPoolConfig()
	cfg.Lease, cfg.PollInterval, cfg.ShutdownTimeout = lease, 10*time.Millisecond, time.Second
	if edit != nil {
		edit(&cfg)
	}
	pool, err := asyncfn.NewPool(l.store, l.reg, l.hub, discard, cfg)
	if err != nil {
		l.t.Fatal(err)
	}
	pool.Start(context.Background())
	l.t.Cleanup(pool.Stop)
	l.pool = pool
	return pool
}

func (l *lib) do(method, fn, id, body string) (int, string) {
	l.t.Helper()
	req, err := http.NewRequest(method, l.srv.URL+"/"+fn, strings.NewReader(body))
	if err != nil {
		l.t.Fatal(err)
	}
	req.Header.Set(asyncfn.HeaderBatchID, id)
	resp, err := l.srv.Client().Do(req)
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		l.t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// pollFor GETs the batch until it is no longer 202, and returns that answer.
func (l *lib) pollFor(fn, id string) (int, string) {
	l.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		status, body := l.do(http.MethodGet, fn, id, "")
		if status != http.StatusAccepted {
			return status, body
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("batch %s/%s still 202 after 20s: %s", fn, id, body)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func counting(calls *atomic.Int32, fn asyncfn.Func) asyncfn.Func {
	return asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
		calls.Add(1)
		return fn.Call(ctx, rows)
	})
}

// claimAndAbandon accepts a batch over HTTP and claims it for a worker that dies at once
// (it never heartbeats nor finishes).
func (l *lib) claimAndAbandon(fn, id, body string, lease time.Duration) {
	l.t.Helper()
	if status, msg := l.do(http.MethodPost, fn, id, body); status != http.StatusAccepted {
		l.t.Fatalf("POST = %d %s", status, msg)
	}
	got, err := l.store.Claim(context.Background(), asyncfn.ClaimParams{Owner: "dead-worker", Now: time.Now(), Lease: lease, Limit: 10})
	if err != nil || len(got) != 1 || got[0].Key.BatchID != id || got[0].Attempts != 1 {
		l.t.Fatalf("fake claim = %v, %v", got, err)
	}
}

// TestLeaseExpiryRequeues (point 3): a batch whose worker died is claimed again once its
// lease expires, and its attempts count the dead one.
func TestLeaseExpiryRequeues(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	l := newLib(t, memory.New(), asyncfn.Function{Name: "f", Func: counting(&calls, asyncfn.Echo)})
	const lease = 60 * time.Millisecond
	l.claimAndAbandon("f", "b1", `{"data":[[0,"x"],[1,2]]}`, lease)
	if status, body := l.do(http.MethodGet, "f", "b1", ""); status != http.StatusAccepted || !strings.Contains(body, "running") {
		t.Fatalf("GET of the abandoned batch = %d %s, want 202 running", status, body)
	}
	l.startPool(5*time.Second, nil) // a live worker's lease: only the dead one's is short
	status, body := l.pollFor("f", "b1")
	if status != http.StatusOK || body != `{"data":[[0,"x"],[1,2]]}` {
		t.Fatalf("GET = %d %s", status, body)
	}
	b, err := l.store.Get(context.Background(), asyncfn.Key{Function: "f", BatchID: "b1"}, time.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	if b.Attempts != 2 || b.State != asyncfn.Succeeded {
		t.Errorf("batch: state %s, attempts %d; want succeeded after 2 attempts", b.State, b.Attempts)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("function called %d times, want 1", n)
	}
}

// TestLeaseExpiryAbandoned (point 3): with no attempts left, the dead worker's batch fails
// with a message that says so.
func TestLeaseExpiryAbandoned(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	l := newLib(t, memory.New(), asyncfn.Function{Name: "f", Func: counting(&calls, asyncfn.Echo), MaxAttempts: 1})
	const lease = 60 * time.Millisecond
	l.claimAndAbandon("f", "b1", `{"data":[[0,"x"]]}`, lease)
	l.startPool(5*time.Second, nil)
	status, body := l.pollFor("f", "b1")
	if status != http.StatusUnprocessableEntity || body != asyncfn.AbandonedError(1).Message {
		t.Fatalf("GET = %d %q, want 422 %q", status, body, asyncfn.AbandonedError(1).Message)
	}
	if !strings.Contains(body, "every attempt allowed (1)") || !strings.Contains(body, "stopped") || strings.Contains(body, "\n") {
		t.Errorf("message %q does not say the workers stopped, in one line", body)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("function called %d times, want 0", n)
	}
}

// TestHeartbeatKeepsLease: a batch that runs for several lease lengths keeps its lease
// through heartbeats and is not run twice.
func TestHeartbeatKeepsLease(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	slow := asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
		calls.Add(1)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return asyncfn.Echo.Call(ctx, rows)
	})
	l := newLib(t, memory.New(), asyncfn.Function{Name: "f", Func: slow})
	l.startPool(300*time.Millisecond, func(c *asyncfn.PoolConfig) { c.Concurrency = 4 })
	if status, body := l.do(http.MethodPost, "f", "b1", `{"data":[[0,1]]}`); status != http.StatusAccepted {
		t.Fatalf("POST = %d %s", status, body)
	}
	if status, body := l.pollFor("f", "b1"); status != http.StatusOK {
		t.Fatalf("GET = %d %s", status, body)
	}
	b, _ := l.store.Get(context.Background(), asyncfn.Key{Function: "f", BatchID: "b1"}, time.Now(), false)
	if calls.Load() != 1 || b.Attempts != 1 {
		t.Errorf("calls %d, attempts %d; want 1 and 1 (the heartbeat must keep the lease)", calls.Load(), b.Attempts)
	}
}

// lostLease is a store on which every heartbeat finds the lease lost.
type lostLease struct{ *memory.Store }

func (lostLease) Extend(context.Context, asyncfn.Key, string, time.Time) error {
	return asyncfn.ErrLeaseLost
}

// TestLeaseLostCancelsRun: a worker that loses its lease cancels its function and records
// nothing.
func TestLeaseLostCancelsRun(t *testing.T) {
	t.Parallel()
	cause := make(chan error, 1)
	fn := asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return nil, ctx.Err()
	})
	store := lostLease{memory.New()}
	l := newLib(t, store, asyncfn.Function{Name: "f", Func: fn})
	if status, body := l.do(http.MethodPost, "f", "b1", `{"data":[[0,1]]}`); status != http.StatusAccepted {
		t.Fatalf("POST = %d %s", status, body)
	}
	l.startPool(30*time.Millisecond, nil)
	select {
	case err := <-cause:
		if !errors.Is(err, asyncfn.ErrLeaseLost) {
			t.Errorf("the function's context was cancelled by %v, want ErrLeaseLost", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the function was not cancelled when its lease was lost")
	}
	l.pool.Stop()
	b, err := store.Get(context.Background(), asyncfn.Key{Function: "f", BatchID: "b1"}, time.Now(), false)
	if err != nil || b.State != asyncfn.Running || b.Error != nil {
		t.Errorf("after a lost lease the worker must record nothing: %+v, %v", b, err)
	}
}

// TestPoolStopHandsBack: Stop cancels a batch still running at ShutdownTimeout and puts it
// back in the queue without counting the attempt.
func TestPoolStopHandsBack(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 1)
	fn := asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	l := newLib(t, memory.New(), asyncfn.Function{Name: "f", Func: fn})
	pool := l.startPool(time.Second, func(c *asyncfn.PoolConfig) { c.ShutdownTimeout = 20 * time.Millisecond })
	if status, body := l.do(http.MethodPost, "f", "b1", `{"data":[[0,1]]}`); status != http.StatusAccepted {
		t.Fatalf("POST = %d %s", status, body)
	}
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the batch never started")
	}
	pool.Stop()
	pool.Stop() // safe twice
	b, err := l.store.Get(context.Background(), asyncfn.Key{Function: "f", BatchID: "b1"}, time.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	if b.State != asyncfn.Queued || b.Attempts != 0 || b.Error != nil || b.Owner != "" {
		t.Errorf("after Stop: state %s, attempts %d, error %v, owner %q; want queued, 0, none, none", b.State, b.Attempts, b.Error, b.Owner)
	}
}

// TestPoolStopWaits: Stop lets a running batch finish within ShutdownTimeout.
func TestPoolStopWaits(t *testing.T) {
	t.Parallel()
	started, release := make(chan struct{}, 1), make(chan struct{})
	fn := asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
		started <- struct{}{}
		<-release
		return asyncfn.Echo.Call(ctx, rows)
	})
	l := newLib(t, memory.New(), asyncfn.Function{Name: "f", Func: fn})
	pool := l.startPool(time.Second, func(c *asyncfn.PoolConfig) { c.ShutdownTimeout = time.Minute })
	if status, body := l.do(http.MethodPost, "f", "b1", `{"data":[[0,1]]}`); status != http.StatusAccepted {
		t.Fatalf("POST = %d %s", status, body)
	}
	<-started
	stopped := make(chan struct{})
	go func() { pool.Stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("Stop returned while a batch was running")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-stopped
	if status, body := l.do(http.MethodGet, "f", "b1", ""); status != http.StatusOK || body != `{"data":[[0,1]]}` {
		t.Errorf("GET = %d %s", status, body)
	}
	// A stopped pool claims nothing more.
	if status, _ := l.do(http.MethodPost, "f", "b2", `{"data":[[0,2]]}`); status != http.StatusAccepted {
		t.Fatalf("POST = %d", status)
	}
	select {
	case <-started:
		t.Error("a stopped pool ran a batch")
	case <-time.After(50 * time.Millisecond):
	}
}

// TestPoolProcess: Process runs the batch it is told, and leaves finished ones alone.
func TestPoolProcess(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	l := newLib(t, memory.New(), asyncfn.Function{Name: "f", Func: counting(&calls, asyncfn.Echo)})
	cfg := asyncfn.DefaultPoolConfig()
	pool, err := asyncfn.NewPool(l.store, l.reg, l.hub, discard, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Stop()
	if status, body := l.do(http.MethodPost, "f", "b1", `{"data":[[0,"a"]]}`); status != http.StatusAccepted {
		t.Fatalf("POST = %d %s", status, body)
	}
	ctx := context.Background()
	key := asyncfn.Key{Function: "f", BatchID: "b1"}
	for range 2 {
		if err := pool.Process(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	if err := pool.Process(ctx, asyncfn.Key{Function: "f", BatchID: "nope"}); err != nil {
		t.Errorf("Process of an unknown batch = %v, want nil", err)
	}
	if err := pool.Process(ctx, asyncfn.Key{Function: "g", BatchID: "b1"}); !errors.Is(err, asyncfn.ErrUnknownFunction) {
		t.Errorf("Process of an unknown function = %v", err)
	}
	if calls.Load() != 1 {
		t.Errorf("function called %d times, want 1", calls.Load())
	}
	if status, body := l.do(http.MethodGet, "f", "b1", ""); status != http.StatusOK || body != `{"data":[[0,"a"]]}` {
		t.Errorf("GET = %d %s", status, body)
	}
}

func TestPoolConfigValidate(t *testing.T) {
	t.Parallel()
	if err := asyncfn.DefaultPoolConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for want, edit := range map[string]func(*asyncfn.PoolConfig){
		"worker id":        func(c *asyncfn.PoolConfig) { c.ID = "" },
		"concurrency":      func(c *asyncfn.PoolConfig) { c.Concurrency = 0 },
		"lease":            func(c *asyncfn.PoolConfig) { c.Lease = time.Millisecond },
		"poll interval":    func(c *asyncfn.PoolConfig) { c.PollInterval = 0 },
		"shutdown timeout": func(c *asyncfn.PoolConfig) { c.ShutdownTimeout = -1 },
	} {
		cfg := asyncfn.DefaultPoolConfig()
		edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want an error naming %s", err, want)
		}
		if _, err := asyncfn.NewPool(memory.New(), &asyncfn.Registry{}, asyncfn.NewHub(), discard, cfg); err == nil {
			t.Errorf("NewPool accepted a bad %s", want)
		}
	}
}

// TestSweeper (point 6): expired batches are deleted from the store, not only hidden.
func TestSweeper(t *testing.T) {
	t.Parallel()
	for name, open := range map[string]func(t *testing.T) asyncfn.Store{
		"memory": func(t *testing.T) asyncfn.Store { return memory.New() },
		"sqlite": func(t *testing.T) asyncfn.Store {
			s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "a.db"), sqlite.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			store := open(t)
			defer store.Close()
			ctx := context.Background()
			now := time.Now()
			for i, ttl := range []time.Duration{50 * time.Millisecond, 50 * time.Millisecond, time.Hour} {
				payload := []byte(`{"data":[[0,1]]}`)
				b := &asyncfn.Batch{
					Key: asyncfn.Key{Function: "f", BatchID: string(rune('a' + i))}, State: asyncfn.Queued,
					Payload: payload, Digest: asyncfn.Digest(payload), Rows: 1, MaxAttempts: 1,
					CreatedAt: now, ExpiresAt: now.Add(ttl),
				}
				if _, err := store.Create(ctx, b); err != nil {
					t.Fatal(err)
				}
			}
			// Nothing has expired as of the creation (the store's clock, not the wall's,
			// which a loaded machine may push past 50 ms already).
			if n, err := store.Sweep(ctx, now, 100); n != 0 || err != nil {
				t.Fatalf("Sweep before expiry = %d, %v; want 0", n, err)
			}
			sw := asyncfn.NewSweeper(store, discard, time.Hour)
			deadline := time.Now().Add(10 * time.Second)
			total := 0
			for total < 2 && time.Now().Before(deadline) {
				total += sw.SweepOnce(ctx)
				time.Sleep(10 * time.Millisecond)
			}
			if total != 2 {
				t.Fatalf("SweepOnce deleted %d batches, want 2", total)
			}
			for _, id := range []string{"a", "b"} {
				if _, err := store.Get(ctx, asyncfn.Key{Function: "f", BatchID: id}, now, false); !errors.Is(err, asyncfn.ErrNotFound) {
					t.Errorf("Get of swept batch %s as of its creation = %v, want ErrNotFound: it is still stored", id, err)
				}
			}
			st, err := store.Stats(ctx, time.Now())
			if err != nil || st != (asyncfn.Stats{Queued: 1}) {
				t.Errorf("Stats = %+v, %v; want the one live batch", st, err)
			}
			// Only the live batch is left, even for a clock past its expiry.
			if n, err := store.Sweep(ctx, now.Add(2*time.Hour), 100); n != 1 || err != nil {
				t.Errorf("Sweep far ahead = %d, %v; want 1", n, err)
			}
		})
	}
}

// TestSweeperStartStop: the background loop sweeps at once, then every interval.
func TestSweeperStartStop(t *testing.T) {
	t.Parallel()
	store := memory.New()
	ctx := context.Background()
	now := time.Now()
	payload := []byte(`{"data":[[0,1]]}`)
	if _, err := store.Create(ctx, &asyncfn.Batch{Key: asyncfn.Key{Function: "f", BatchID: "1"}, State: asyncfn.Queued,
		Payload: payload, Digest: asyncfn.Digest(payload), Rows: 1, MaxAttempts: 1, CreatedAt: now, ExpiresAt: now.Add(30 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	sw := asyncfn.NewSweeper(store, discard, 10*time.Millisecond)
	sw.Start(ctx)
	defer sw.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// As of its creation the batch is live: only deleting it makes Get miss it.
		if _, err := store.Get(ctx, asyncfn.Key{Function: "f", BatchID: "1"}, now, false); errors.Is(err, asyncfn.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sweeper did not delete the expired batch")
		}
		time.Sleep(10 * time.Millisecond)
	}
	sw.Stop()
	sw.Stop()
}
