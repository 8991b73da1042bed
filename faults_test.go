package asyncfn_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/memory"
	"github.com/asyncfn/asyncfn/storetest"
)

// The store's write failures, as the engines classify them.
var (
	errDiskFull = fmt.Errorf("%w: database or disk is full", asyncfn.ErrNoWrites)
	errOutage   = fmt.Errorf("%w: connection refused", asyncfn.ErrUnavailable)
)

// waitFor polls cond until it holds, failing the test after 20s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still not %s after 20s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestClaimCommitLostRunsNothing (correctness issue, defect 1): a claim whose commit
// failed is not durable, so the worker runs none of the batches it returned, and it asks
// the failing store again only after a growing pause. Once the store heals, each batch
// runs exactly once. Without the fix the batches ran in a hot loop, thousands of times,
// without their attempts ever rising.
func TestClaimCommitLostRunsNothing(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	faulty := storetest.NewFaulty(memory.New())
	l := newLib(t, faulty, asyncfn.Function{Name: "f", Func: counting(&calls, asyncfn.Echo)})
	for i := range 3 {
		if status, body := l.do(http.MethodPost, "f", fmt.Sprint("b", i), fmt.Sprintf(`{"data":[[0,"row %d"]]}`, i)); status != http.StatusAccepted {
			t.Fatalf("POST = %d %s", status, body)
		}
	}
	faulty.FailClaimCommit(errDiskFull)
	l.startPool(time.Minute, nil)
	waitFor(t, "claiming", func() bool { return faulty.Calls(storetest.OpClaim) >= 2 })
	time.Sleep(time.Second)
	if n := calls.Load(); n != 0 {
		t.Fatalf("the function ran %d times on batches whose claim was not committed; want 0", n)
	}
	// Backoff from 100ms doubling: about 4 claims in a second; a hot loop makes thousands.
	if n := faulty.Calls(storetest.OpClaim); n > 12 {
		t.Errorf("%d claims in about a second against a failing store; want a few, backing off", n)
	}
	faulty.Heal()
	for i := range 3 {
		status, body := l.pollFor("f", fmt.Sprint("b", i))
		if want := fmt.Sprintf(`{"data":[[0,"row %d"]]}`, i); status != http.StatusOK || body != want {
			t.Errorf("GET b%d = %d %s, want 200 %s", i, status, body, want)
		}
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("the function ran %d times for 3 batches, want 3", n)
	}
}

// TestClaimFailureBacksOff (defect 1): new batches keep waking the workers, but a store
// whose claims fail is asked again only after a growing pause, not once per wake-up.
func TestClaimFailureBacksOff(t *testing.T) {
	t.Parallel()
	faulty := storetest.NewFaulty(memory.New())
	l := newLib(t, faulty, asyncfn.Function{Name: "f", Func: asyncfn.Echo})
	faulty.Fail(errOutage, storetest.OpClaim)
	l.startPool(time.Minute, nil)
	stop := time.Now().Add(time.Second)
	for i := 0; time.Now().Before(stop); i++ {
		l.hub.Publish(asyncfn.Event{Key: asyncfn.Key{Function: "f", BatchID: fmt.Sprint(i)}, State: asyncfn.Queued})
		time.Sleep(2 * time.Millisecond)
	}
	if n := faulty.Calls(storetest.OpClaim); n > 12 {
		t.Errorf("%d claims in a second of wake-ups against a failing store; want a few, backing off", n)
	}
}

// TestFinishFailsThenHeals: a result that cannot be recorded during an outage is kept and
// recorded when the store comes back; the function does not run again.
func TestFinishFailsThenHeals(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	faulty := storetest.NewFaulty(memory.New())
	l := newLib(t, faulty, asyncfn.Function{Name: "f", Func: counting(&calls, asyncfn.Echo)})
	faulty.Fail(errOutage, storetest.OpFinish)
	l.startPool(time.Minute, nil)
	if status, body := l.do(http.MethodPost, "f", "b", `{"data":[[0,"x"]]}`); status != http.StatusAccepted {
		t.Fatalf("POST = %d %s", status, body)
	}
	waitFor(t, "finishing", func() bool { return faulty.Calls(storetest.OpFinish) >= 2 })
	faulty.Heal()
	if status, body := l.pollFor("f", "b"); status != http.StatusOK || body != `{"data":[[0,"x"]]}` {
		t.Fatalf("GET = %d %s", status, body)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the function ran %d times, want 1", n)
	}
}

// TestFinishKeepsFailing: a store that never records the outcome makes the batch run again
// only when its lease expires, at most its attempts, and then fail with a sentence that
// says its workers stopped: no runaway retry, no wrong answer.
func TestFinishKeepsFailing(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	faulty := storetest.NewFaulty(memory.New())
	l := newLib(t, faulty, asyncfn.Function{Name: "f", Func: counting(&calls, asyncfn.Echo), MaxAttempts: 2})
	faulty.Fail(fmt.Errorf("constraint violated"), storetest.OpFinish)
	l.startPool(60*time.Millisecond, nil)
	if status, body := l.do(http.MethodPost, "f", "b", `{"data":[[0,"x"]]}`); status != http.StatusAccepted {
		t.Fatalf("POST = %d %s", status, body)
	}
	status, body := l.pollFor("f", "b")
	if status != http.StatusUnprocessableEntity || body != asyncfn.AbandonedError(2).Message {
		t.Fatalf("GET = %d %q, want 422 %q", status, body, asyncfn.AbandonedError(2).Message)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("the function ran %d times with 2 attempts allowed, want 2", n)
	}
}

// TestCreateFailsIs503: a POST whose batch cannot be stored is answered 503 with a sentence
// (Snowflake retries), and its retry, once the store heals, is accepted and answered.
func TestCreateFailsIs503(t *testing.T) {
	t.Parallel()
	faulty := storetest.NewFaulty(memory.New())
	l := newLib(t, faulty, asyncfn.Function{Name: "f", Func: asyncfn.Echo})
	l.startPool(time.Minute, nil)
	faulty.Fail(errDiskFull, storetest.OpCreate)
	status, body := l.do(http.MethodPost, "f", "b", `{"data":[[0,"x"]]}`)
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "cannot take writes") || strings.Count(body, ".") != 1 {
		t.Fatalf("POST while the store takes no writes = %d %q, want 503 and one sentence that says why", status, body)
	}
	faulty.Heal()
	if status, body := l.do(http.MethodPost, "f", "b", `{"data":[[0,"x"]]}`); status != http.StatusAccepted {
		t.Fatalf("retried POST = %d %s", status, body)
	}
	if status, body := l.pollFor("f", "b"); status != http.StatusOK || body != `{"data":[[0,"x"]]}` {
		t.Fatalf("GET = %d %s", status, body)
	}
}

// TestMarkDeliveredFails: failing to record a delivery only delays the cleanup; every GET
// is still answered with the rows.
func TestMarkDeliveredFails(t *testing.T) {
	t.Parallel()
	faulty := storetest.NewFaulty(memory.New())
	l := newLib(t, faulty, asyncfn.Function{Name: "f", Func: asyncfn.Echo})
	l.startPool(time.Minute, nil)
	faulty.Fail(errDiskFull, storetest.OpMarkDelivered)
	if status, body := l.do(http.MethodPost, "f", "b", `{"data":[[0,"x"]]}`); status != http.StatusAccepted {
		t.Fatalf("POST = %d %s", status, body)
	}
	for range 3 {
		if status, body := l.pollFor("f", "b"); status != http.StatusOK || body != `{"data":[[0,"x"]]}` {
			t.Fatalf("GET = %d %s", status, body)
		}
	}
	waitFor(t, "trying to record the delivery", func() bool { return faulty.Calls(storetest.OpMarkDelivered) > 0 })
	b, err := faulty.Store.Get(context.Background(), asyncfn.Key{Function: "f", BatchID: "b"}, time.Now(), false)
	if err != nil || !b.DeliveredAt.IsZero() {
		t.Fatalf("batch after failed deliveries = %+v, %v; want it live and not marked delivered", b, err)
	}
}

// TestReadyWhileWritesFail (defect 7): /readyz fails while the store takes no writes, with
// a sentence that says so, and recovers with it.
func TestReadyWhileWritesFail(t *testing.T) {
	t.Parallel()
	faulty := storetest.NewFaulty(memory.New())
	l := newLib(t, faulty, asyncfn.Function{Name: "f", Func: asyncfn.Echo})
	if status, body := l.do(http.MethodGet, "readyz", "", ""); status != http.StatusOK {
		t.Fatalf("/readyz = %d %s", status, body)
	}
	faulty.FailWrites(errDiskFull)
	if status, body := l.do(http.MethodGet, "readyz", "", ""); status != http.StatusServiceUnavailable || !strings.Contains(body, "cannot take writes") {
		t.Fatalf("/readyz while writes fail = %d %q, want 503 saying the store takes no writes", status, body)
	}
	faulty.Heal()
	if status, body := l.do(http.MethodGet, "readyz", "", ""); status != http.StatusOK {
		t.Fatalf("/readyz after healing = %d %s", status, body)
	}
}

// atOnce returns a front end whose POSTs run their batches at once on a pool of its own
// (as serve does) over store, waiting 200ms for them, its configuration and the pool's
// then edited by edit (if not nil), and the pool, started; stopped at cleanup.
func atOnce(t *testing.T, store asyncfn.Store, edit func(*asyncfn.ServiceConfig, *asyncfn.PoolConfig), fns ...asyncfn.Function) (*asyncfn.Service, *asyncfn.Pool) {
	t.Helper()
	return atOnceLogged(t, store, discard, edit, fns...)
}

// atOnceLogged is atOnce with both logging to log.
func atOnceLogged(t *testing.T, store asyncfn.Store, log *slog.Logger, edit func(*asyncfn.ServiceConfig, *asyncfn.PoolConfig), fns ...asyncfn.Function) (*asyncfn.Service, *asyncfn.Pool) {
	t.Helper()
	reg, err := asyncfn.NewRegistry(fns...)
	if err != nil {
		t.Fatal(err)
	}
	hub := asyncfn.NewHub()
	cfg, pcfg := asyncfn.DefaultServiceConfig(), asyncfn.DefaultPoolConfig()
	cfg.SyncWait = 200 * time.Millisecond
	if edit != nil {
		edit(&cfg, &pcfg)
	}
	pool, err := asyncfn.NewPool(store, reg, hub, log, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Local = pool
	svc, err := asyncfn.NewService(store, reg, hub, log, cfg)
	if err != nil {
		t.Fatal(err)
	}
	pool.Start(context.Background())
	t.Cleanup(pool.Stop)
	return svc, pool
}

// pollEvery is an edit for atOnce: the pool polls the store every d.
func pollEvery(d time.Duration) func(*asyncfn.ServiceConfig, *asyncfn.PoolConfig) {
	return func(_ *asyncfn.ServiceConfig, p *asyncfn.PoolConfig) { p.PollInterval = d }
}

// TestAnsweredBeforeRecorded: a batch run at once is answered on its POST as soon as its
// function returns, before the store records the outcome, which it then records with the
// delivery in one write (no MarkDelivered). A retried POST meanwhile finds it running and
// does not run it again; once the write lands, it is answered from the store. Without the
// fix the POST waited for the write, and a store slow to take it turned a 200 into a 202.
func TestAnsweredBeforeRecorded(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	faulty := storetest.NewFaulty(memory.New())
	svc, _ := atOnce(t, faulty, pollEvery(10*time.Millisecond), asyncfn.Function{Name: "f", Func: counting(&calls, asyncfn.Echo)})
	ctx := context.Background()
	const body = `{"data":[[0,"x"]]}`
	faulty.Fail(errOutage, storetest.OpFinish) // the outcome cannot be recorded for now
	b, err := svc.Accept(ctx, request("f", "b", body))
	if err != nil || b.State != asyncfn.Succeeded || string(b.Result) != body || b.DeliveredAt.IsZero() {
		t.Fatalf("POST = %+v, %v; want answered with its rows, delivered", b, err)
	}
	if dup, err := svc.Accept(ctx, request("f", "b", body)); err != nil || dup.State != asyncfn.Running {
		t.Fatalf("retried POST before the outcome is recorded = %+v, %v; want it running (202)", dup, err)
	}
	faulty.Heal()
	var stored *asyncfn.Batch
	waitFor(t, "recording the outcome", func() bool {
		stored, err = faulty.Store.Get(ctx, b.Key, time.Now(), false)
		return err == nil && stored.State == asyncfn.Succeeded
	})
	if stored.DeliveredAt.IsZero() || stored.ExpiresAt.Sub(stored.DeliveredAt) != asyncfn.DefaultServiceConfig().Grace {
		t.Errorf("recorded %+v; want delivered, expiring a grace period after", stored)
	}
	dup, err := svc.Accept(ctx, request("f", "b", body))
	if err != nil || dup.State != asyncfn.Succeeded || string(dup.Result) != body {
		t.Fatalf("retried POST after the outcome is recorded = %+v, %v; want its rows", dup, err)
	}
	if n, m := calls.Load(), faulty.Calls(storetest.OpMarkDelivered); n != 1 || m != 0 {
		t.Errorf("the function ran %d times and MarkDelivered was called %d times; want 1 and 0", n, m)
	}
}

// TestAtOnceClaimsNothing: batches run at once free their worker slots without a claim
// each; the claim loop only claims for news (a batch queued, a slot freed while batches
// wait for one) or its poll. Without the fix every batch cost a claim transaction that
// found nothing: 100 claims here.
func TestAtOnceClaimsNothing(t *testing.T) {
	t.Parallel()
	faulty := storetest.NewFaulty(memory.New())
	svc, _ := atOnce(t, faulty, pollEvery(time.Hour), asyncfn.Function{Name: "f", Func: asyncfn.Echo})
	waitFor(t, "the first claim", func() bool { return faulty.Calls(storetest.OpClaim) > 0 })
	for i := range 100 {
		b, err := svc.Accept(context.Background(), request("f", fmt.Sprint("b", i), `{"data":[[0,"x"]]}`))
		if err != nil || b.State != asyncfn.Succeeded {
			t.Fatalf("POST %d = %+v, %v", i, b, err)
		}
	}
	if n := faulty.Calls(storetest.OpClaim); n > 2 {
		t.Errorf("%d claims for 100 batches run at once, want at most 2", n)
	}
}
