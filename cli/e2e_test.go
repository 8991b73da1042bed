package cli_test

// End-to-end tests of the asyncfn service: cli.Main (serve, worker, migrate) over real
// HTTP on port 0, each test on a SQLite file of its own. The numbers in the comments are
// the checks of issue 2.

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "modernc.org/sqlite" // to look into a running server's file

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/cli"
	"github.com/asyncfn/asyncfn/internal/syncbuf"
	"github.com/asyncfn/asyncfn/sqlite"
)

var echoFn = asyncfn.Function{Name: "echo", Func: asyncfn.Echo}

// (1) The protocol: 202 on POST, 202 while queued and running, 200 with one row per input
// row in order, and a failed batch's documented status with one sentence.
func TestProtocol(t *testing.T) {
	t.Parallel()
	g := newGate()
	s := startServer(t, serverConfig{
		args: []string{"--sync-wait", "0", "--poll-wait", "0", "--workers", "1"},
		fns: []asyncfn.Function{
			{Name: "slow", Func: g.Func()},
			{Name: "invalid", Func: asyncfn.FuncOf(func(ctx context.Context, rs []asyncfn.Row) ([]any, error) {
				return nil, asyncfn.InvalidInputf("row %d: %s is not a date.", rs[1].Number, rs[1].Args[0])
			})},
			{Name: "panics", Func: asyncfn.FuncOf(func(context.Context, []asyncfn.Row) ([]any, error) { panic("kaboom") })},
		},
	})
	defer g.open()

	first := []any{"a", 1.5, nil, map[string]any{"k": []any{1.0, "x"}}, true, "é\"<>&"}
	r := s.post("slow", "b1", rows(first...))
	if r.Status != http.StatusAccepted {
		t.Fatalf("POST = %v, want 202", r)
	}
	if got := g.waitStarted(t); got != "a" {
		t.Fatalf("the function started on %q", got)
	}
	if r := s.get("slow", "b1"); r.Status != http.StatusAccepted || !strings.Contains(r.Body, "running") {
		t.Errorf("GET of a running batch = %v, want 202 running", r)
	}
	// One worker, busy: the next batch waits in the queue.
	second := make([]any, 500)
	for i := range second {
		second[i] = fmt.Sprint("row-", i)
	}
	if r := s.post("slow", "b2", rows(second...)); r.Status != http.StatusAccepted {
		t.Fatalf("POST = %v, want 202", r)
	}
	if r := s.get("slow", "b2"); r.Status != http.StatusAccepted || !strings.Contains(r.Body, "queued") {
		t.Errorf("GET of a queued batch = %v, want 202 queued", r)
	}
	g.open()
	checkOK(t, s.await("slow", "b1", http.StatusOK), echoed(first...))
	checkOK(t, s.await("slow", "b2", http.StatusOK), echoed(second...))

	if r := s.post("invalid", "b3", rows("2026-01-01", "nope")); r.Status != http.StatusAccepted {
		t.Fatalf("POST = %v", r)
	}
	r = s.await("invalid", "b3", http.StatusBadRequest)
	if r.Body != `row 1: "nope" is not a date.` {
		t.Errorf("InvalidInput answer = %v", r)
	}
	checkSentence(t, r)

	if r := s.post("panics", "b4", rows(1)); r.Status != http.StatusAccepted {
		t.Fatalf("POST = %v", r)
	}
	r = s.await("panics", "b4", http.StatusUnprocessableEntity)
	if r.Body != "the function panics panicked: kaboom." {
		t.Errorf("panic answer = %v", r)
	}
	checkSentence(t, r)
}

// (2) Idempotency: a retried POST runs nothing new and answers from the stored state; the
// same id with another body is a conflict; concurrent POSTs of one id run it once.
func TestIdempotency(t *testing.T) {
	t.Parallel()
	g := newGate()
	var invalidCalls, echoCalls atomic.Int32
	s := startServer(t, serverConfig{
		args: []string{"--sync-wait", "0", "--poll-wait", "0", "--workers", "4"},
		fns: []asyncfn.Function{
			{Name: "slow", Func: g.Func()},
			{Name: "invalid", Func: counted(&invalidCalls, asyncfn.FuncOf(func(context.Context, []asyncfn.Row) ([]any, error) {
				return nil, asyncfn.InvalidInputf("the rows are wrong.")
			}))},
			{Name: "echo", Func: counted(&echoCalls, asyncfn.Echo)},
		},
	})
	defer g.open()

	body := rows("x", "y")
	for i := range 2 {
		if r := s.post("slow", "k1", body); r.Status != http.StatusAccepted {
			t.Fatalf("POST #%d = %v, want 202", i+1, r)
		}
	}
	g.waitStarted(t)
	if r := s.post("slow", "k1", body); r.Status != http.StatusAccepted || !strings.Contains(r.Body, "running") {
		t.Errorf("POST of a running batch = %v, want 202 running", r)
	}
	r := s.post("slow", "k1", rows("x", "z"))
	if r.Status != http.StatusConflict || !strings.Contains(r.Body, "different body") {
		t.Errorf("POST with another body = %v, want 409", r)
	}
	checkSentence(t, r)
	g.open()
	checkOK(t, s.await("slow", "k1", http.StatusOK), echoed("x", "y"))
	checkOK(t, s.post("slow", "k1", body), echoed("x", "y"))
	if r := s.post("slow", "k1", rows("other")); r.Status != http.StatusConflict {
		t.Errorf("POST of a finished batch with another body = %v, want 409", r)
	}
	if n := g.calls.Load(); n != 1 {
		t.Errorf("the function ran %d times, want 1", n)
	}

	// A stored error is answered again, without running the function again.
	if r := s.post("invalid", "k2", body); r.Status != http.StatusAccepted && r.Status != http.StatusBadRequest {
		t.Fatalf("POST = %v", r)
	}
	failed := s.await("invalid", "k2", http.StatusBadRequest)
	for range 2 {
		if r := s.post("invalid", "k2", body); r.Status != http.StatusBadRequest || r.Body != failed.Body {
			t.Errorf("POST of a failed batch = %v, want %v", r, failed)
		}
	}
	if n := invalidCalls.Load(); n != 1 {
		t.Errorf("the failing function ran %d times, want 1", n)
	}

	// 20 POSTs of one batch at once: one run.
	var wg sync.WaitGroup
	statuses := make(chan int, 20)
	big := make([]any, 2000)
	for i := range big {
		big[i] = i
	}
	for range 20 {
		wg.Go(func() { statuses <- s.post("echo", "k3", rows(big...)).Status })
	}
	wg.Wait()
	close(statuses)
	for st := range statuses {
		if st != http.StatusAccepted && st != http.StatusOK {
			t.Errorf("a concurrent POST got %d", st)
		}
	}
	checkOK(t, s.await("echo", "k3", http.StatusOK), echoed(big...))
	if n := echoCalls.Load(); n != 1 {
		t.Errorf("20 concurrent POSTs of one batch ran the function %d times, want 1", n)
	}
}

// (3) The worker pool: retries, exhausted retries, panics, timeouts and per-function
// concurrency. (Lease expiry is tested at the library level: worker_test.go.)
func TestWorkerPool(t *testing.T) {
	t.Parallel()
	var flakyCalls, throttledCalls, panicCalls atomic.Int32
	stuck := make(chan struct{}) // the function that ignores its context is released at the end
	limited := newGate()
	srv := startServer(t, serverConfig{
		args: []string{"--sync-wait", "0", "--poll-wait", "0", "--workers", "8"},
		fns: []asyncfn.Function{
			{Name: "flaky", Backoff: 10 * time.Millisecond, Func: asyncfn.FuncOf(func(ctx context.Context, rs []asyncfn.Row) ([]any, error) {
				if flakyCalls.Add(1) == 1 {
					return nil, asyncfn.RetryableError(errors.New("the downstream service is busy"))
				}
				return asyncfn.Echo.Call(ctx, rs)
			})},
			{Name: "throttled", Backoff: 10 * time.Millisecond, MaxAttempts: 3, Func: asyncfn.FuncOf(func(context.Context, []asyncfn.Row) ([]any, error) {
				throttledCalls.Add(1)
				return nil, asyncfn.RetryableError(errors.New("throttled."))
			})},
			{Name: "panicky", Func: asyncfn.FuncOf(func(ctx context.Context, rs []asyncfn.Row) ([]any, error) {
				panicCalls.Add(1)
				if string(rs[0].Args[0]) == `"boom"` {
					_ = rs[len(rs)] // a real runtime panic: index out of range
				}
				return asyncfn.Echo.Call(ctx, rs)
			})},
			{Name: "stubborn", Timeout: 50 * time.Millisecond, Func: asyncfn.FuncOf(func(ctx context.Context, rs []asyncfn.Row) ([]any, error) {
				<-stuck // ignores ctx
				return asyncfn.Echo.Call(ctx, rs)
			})},
			{Name: "polite", Timeout: 50 * time.Millisecond, Func: asyncfn.FuncOf(func(ctx context.Context, rs []asyncfn.Row) ([]any, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			})},
			{Name: "limited", Concurrency: 2, Func: limited.Func()},
			{Name: "plain", MaxAttempts: 2, Backoff: 10 * time.Millisecond, Func: asyncfn.FuncOf(func(ctx context.Context, rs []asyncfn.Row) ([]any, error) {
				// Go style: no final period; a downstream answer quoted with its newline.
				err := errors.New("calling the scoring service: 503 Service Unavailable\nretry later")
				if string(rs[0].Args[0]) == `"retry"` {
					return nil, asyncfn.RetryableError(err)
				}
				return nil, err
			})},
		},
	})
	// The subtests run after this function returns: release the functions at cleanup,
	// before the server stops.
	t.Cleanup(func() { close(stuck); limited.open() })

	t.Run("retry then success", func(t *testing.T) {
		t.Parallel()
		s := srv.with(t)
		s.post("flaky", "r1", rows("a", "b"))
		checkOK(t, s.await("flaky", "r1", http.StatusOK), echoed("a", "b"))
		if n := flakyCalls.Load(); n != 2 {
			t.Errorf("the function ran %d times, want 2", n)
		}
	})
	t.Run("retries exhausted", func(t *testing.T) {
		t.Parallel()
		s := srv.with(t)
		s.post("throttled", "r2", rows("a"))
		r := s.await("throttled", "r2", http.StatusUnprocessableEntity)
		if !strings.Contains(r.Body, "failed 3 times") || !strings.Contains(r.Body, "throttled") {
			t.Errorf("answer %v does not say how many times it failed and why", r)
		}
		checkSentence(t, r)
		if n := throttledCalls.Load(); n != 3 {
			t.Errorf("the function ran %d times, want 3", n)
		}
	})
	t.Run("panic", func(t *testing.T) {
		t.Parallel()
		s := srv.with(t)
		s.post("panicky", "p1", rows("boom"))
		r := s.await("panicky", "p1", http.StatusUnprocessableEntity)
		if !strings.Contains(r.Body, "the function panicky panicked: runtime error: index out of range") {
			t.Errorf("panic answer = %v", r)
		}
		checkSentence(t, r)
		// The process lives on.
		s.post("panicky", "p2", rows("fine"))
		checkOK(t, s.await("panicky", "p2", http.StatusOK), echoed("fine"))
		if n := panicCalls.Load(); n != 2 {
			t.Errorf("the function ran %d times, want 2 (a panic is not retried)", n)
		}
	})
	// Snowflake shows the body in the SQL error: a function's own error (Go style, no
	// final period, perhaps several lines) must still be answered as one sentence.
	t.Run("plain error", func(t *testing.T) {
		t.Parallel()
		s := srv.with(t)
		for _, arg := range []string{"fail", "retry"} {
			s.post("plain", "e-"+arg, rows(arg))
			r := s.await("plain", "e-"+arg, http.StatusUnprocessableEntity)
			if !strings.Contains(r.Body, "503 Service Unavailable") {
				t.Errorf("answer %v does not carry the function's error", r)
			}
			checkSentence(t, r)
		}
	})
	t.Run("timeout ignoring ctx", func(t *testing.T) {
		t.Parallel()
		s := srv.with(t)
		s.post("stubborn", "t1", rows(1))
		r := s.await("stubborn", "t1", http.StatusUnprocessableEntity)
		if r.Body != "the function stubborn did not finish within its timeout of 50ms." {
			t.Errorf("timeout answer = %v", r)
		}
	})
	t.Run("timeout honouring ctx", func(t *testing.T) {
		t.Parallel()
		s := srv.with(t)
		s.post("polite", "t2", rows(1))
		r := s.await("polite", "t2", http.StatusUnprocessableEntity)
		if r.Body != "the function polite did not finish within its timeout of 50ms." {
			t.Errorf("timeout answer = %v", r)
		}
	})
	t.Run("concurrency", func(t *testing.T) {
		t.Parallel()
		s := srv.with(t)
		for i := range 6 {
			if r := s.post("limited", fmt.Sprint("c", i), rows(i)); r.Status != http.StatusAccepted {
				t.Fatalf("POST = %v", r)
			}
		}
		limited.waitStarted(t)
		limited.waitStarted(t)
		// Two run; the others stay queued however long we look.
		for i := range 6 {
			if r := s.get("limited", fmt.Sprint("c", i)); r.Status != http.StatusAccepted {
				t.Fatalf("GET = %v", r)
			}
		}
		if n := limited.running.Load(); n != 2 {
			t.Errorf("%d batches of a function with Concurrency 2 running", n)
		}
		limited.open()
		for i := range 6 {
			checkOK(t, s.await("limited", fmt.Sprint("c", i), http.StatusOK), echoed(i))
		}
		if n := limited.maxRunning.Load(); n != 2 {
			t.Errorf("at most %d batches ran at once, want 2 (Concurrency 2, 8 workers)", n)
		}
	})
}

// (4) Latency: a quick batch is answered on its POST; a held GET answers when the batch
// finishes; with no waiting at all, 202s at once.
func TestLatency(t *testing.T) {
	t.Parallel()
	t.Run("sync-wait", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, serverConfig{args: []string{"--sync-wait", "2s"}, fns: []asyncfn.Function{echoFn}})
		checkOK(t, s.post("echo", "s1", rows("a", 2, "c")), echoed("a", 2, "c"))
	})
	t.Run("poll-wait", func(t *testing.T) {
		t.Parallel()
		g := newGate()
		defer g.open()
		s := startServer(t, serverConfig{args: []string{"--sync-wait", "0", "--poll-wait", "5s"}, fns: []asyncfn.Function{{Name: "slow", Func: g.Func()}}})
		if r := s.post("slow", "p1", rows("a")); r.Status != http.StatusAccepted {
			t.Fatalf("POST = %v", r)
		}
		g.waitStarted(t)
		got := make(chan reply, 1)
		go func() { got <- s.get("slow", "p1") }()
		time.Sleep(50 * time.Millisecond) // let the GET reach the server (not an assertion)
		select {
		case r := <-got:
			t.Fatalf("the GET of a running batch was not held: %v", r)
		default:
		}
		g.open()
		select {
		case r := <-got:
			checkOK(t, r, echoed("a"))
			if d := time.Since(r.Sent); d >= 5*time.Second {
				t.Errorf("the held GET answered after %v, at the end of the poll-wait instead of when the batch finished", d)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the held GET never answered")
		}
	})
	t.Run("no waiting", func(t *testing.T) {
		t.Parallel()
		g := newGate()
		defer g.open()
		s := startServer(t, serverConfig{args: []string{"--sync-wait", "0", "--poll-wait", "0"}, fns: []asyncfn.Function{{Name: "slow", Func: g.Func()}}})
		if r := s.post("slow", "n1", rows("a")); r.Status != http.StatusAccepted {
			t.Fatalf("POST = %v", r)
		}
		g.waitStarted(t)
		if r := s.get("slow", "n1"); r.Status != http.StatusAccepted {
			t.Fatalf("GET = %v", r)
		}
		g.open()
		checkOK(t, s.await("slow", "n1", http.StatusOK), echoed("a"))
	})
}

// (5) Backpressure: past max-queued, a new batch is answered 429 with Retry-After; a
// retried POST of an accepted batch is still answered from its state.
func TestBackpressure(t *testing.T) {
	t.Parallel()
	store := filepath.Join(t.TempDir(), "a.db")
	s := startServer(t, serverConfig{store: store, args: []string{"--max-queued", "2", "--workers", "0", "--sync-wait", "0", "--poll-wait", "0"}, fns: []asyncfn.Function{echoFn}})
	for _, id := range []string{"q1", "q2"} {
		if r := s.post("echo", id, rows(id)); r.Status != http.StatusAccepted {
			t.Fatalf("POST %s = %v", id, r)
		}
	}
	var r reply
	eventually(t, "a 429", func() bool {
		r = s.post("echo", "q3", rows("q3"))
		if r.Status == http.StatusAccepted {
			t.Fatalf("a third batch was accepted with --max-queued 2")
		}
		return r.Status == http.StatusTooManyRequests
	})
	if r.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	checkSentence(t, r)
	for _, id := range []string{"q1", "q2"} {
		if r := s.post("echo", id, rows(id)); r.Status != http.StatusAccepted {
			t.Errorf("retried POST of accepted batch %s under overload = %v, want 202", id, r)
		}
		if r := s.get("echo", id); r.Status != http.StatusAccepted {
			t.Errorf("GET %s under overload = %v, want 202", id, r)
		}
	}
	if r := s.post("echo", "q3", rows("q3")); r.Status != http.StatusTooManyRequests {
		t.Errorf("a new batch still overloaded: %v", r)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	st := storeStats(t, store)
	if st.Queued != 2 {
		t.Errorf("store holds %+v, want the 2 accepted batches", st)
	}
}

func storeStats(t *testing.T, path string) asyncfn.Stats {
	t.Helper()
	db, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := db.Stats(context.Background(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// (6) Retention: a served answer stays for the grace period, then is gone; a batch never
// collected is gone after the retention period, and deleted from the file.
func TestRetention(t *testing.T) {
	t.Parallel()
	t.Run("grace", func(t *testing.T) {
		t.Parallel()
		const grace = 200 * time.Millisecond
		s := startServer(t, serverConfig{args: []string{"--grace", grace.String(), "--sync-wait", "0", "--poll-wait", "0"}, fns: []asyncfn.Function{echoFn}})
		first := s.post("echo", "g1", rows("a"))
		if first.Status != http.StatusOK {
			first = s.await("echo", "g1", http.StatusOK)
		}
		checkOK(t, first, echoed("a"))
		// The first 200 went out after first.Sent: until first.Sent+grace it must be served again.
		again := s.get("echo", "g1")
		if time.Since(first.Sent) < grace {
			checkOK(t, again, echoed("a"))
		} else if again.Status != http.StatusOK && again.Status != http.StatusNotFound {
			t.Errorf("GET after the grace = %v", again)
		} else {
			t.Logf("the second GET came too late to check the grace (%v)", time.Since(first.Sent))
		}
		var r reply
		eventually(t, "a 404 after the grace period", func() bool {
			r = s.get("echo", "g1")
			if r.Status != http.StatusOK && r.Status != http.StatusNotFound {
				t.Fatalf("GET = %v", r)
			}
			return r.Status == http.StatusNotFound
		})
		if d := time.Since(first.Sent); d < grace {
			t.Errorf("the answer was gone %v after it was first served, before the grace of %v", d, grace)
		}
		if !strings.Contains(r.Body, "unknown or has expired") {
			t.Errorf("404 body %q", r.Body)
		}
		checkSentence(t, r)
	})
	t.Run("retention", func(t *testing.T) {
		t.Parallel()
		const retention = 300 * time.Millisecond
		store := filepath.Join(t.TempDir(), "a.db")
		s := startServer(t, serverConfig{store: store, args: []string{"--retention", retention.String(), "--sweep-interval", "50ms", "--workers", "0", "--sync-wait", "0", "--poll-wait", "0"}, fns: []asyncfn.Function{echoFn}})
		r := s.post("echo", "r1", rows("a"))
		if r.Status != http.StatusAccepted {
			t.Fatalf("POST = %v", r)
		}
		accepted := r.Sent
		eventually(t, "a 404 after the retention period", func() bool {
			r = s.get("echo", "r1")
			if r.Status != http.StatusAccepted && r.Status != http.StatusNotFound {
				t.Fatalf("GET = %v", r)
			}
			return r.Status == http.StatusNotFound
		})
		if d := time.Since(accepted); d < retention {
			t.Errorf("the batch was gone after %v, before the retention of %v", d, retention)
		}
		// The sweeper deletes the row; look into the file while the server runs (WAL lets
		// another connection read).
		db, err := sql.Open("sqlite", "file:"+store+"?mode=ro&_pragma=busy_timeout(5000)")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		eventually(t, "the sweeper to delete the expired batch", func() bool {
			var n int
			if err := db.QueryRow(`SELECT count(*) FROM batches`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n == 0
		})
		// The same id may be sent again once its batch has gone.
		if r := s.post("echo", "r1", rows("b")); r.Status != http.StatusAccepted {
			t.Errorf("POST of an expired batch id = %v, want 202", r)
		}
	})
}

// (8) Bad input is answered 4xx with one sentence, never 5xx, and harms nothing.
func TestBadInput(t *testing.T) {
	t.Parallel()
	const max = 64 << 10
	s := startServer(t, serverConfig{args: []string{"--max-body-bytes", fmt.Sprint(max), "--sync-wait", "5s", "--poll-wait", "0"}, fns: []asyncfn.Function{echoFn}})
	good := rows("a", "b")
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	df := func(b []byte) []byte {
		var buf bytes.Buffer
		w, _ := flate.NewWriter(&buf, flate.BestCompression)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	bomb := gz(rows(strings.Repeat(" ", 4<<20))) // 4 MB of blanks, a few KB compressed
	if len(bomb) > max {
		t.Fatalf("the bomb is %d bytes compressed", len(bomb))
	}
	id := 0
	hdr := func(extra ...string) []string {
		id++
		return sfHeaders("echo", fmt.Sprint("bad-", id), extra...)
	}
	noID := []string{"content-type", "application/json"}
	for _, tc := range []struct {
		name   string
		method string
		path   string
		body   []byte
		header []string
		status int
		want   string
	}{
		{"no batch id", "POST", "/echo", good, noID, 400, "has no sf-external-function-query-batch-id header"},
		{"not JSON", "POST", "/echo", []byte(`{"data": [[0, "a"]`), hdr(), 400, "not valid JSON"},
		{"not JSON at all", "POST", "/echo", []byte(`SELECT 1`), hdr(), 400, "not valid JSON"},
		{"no data", "POST", "/echo", []byte(`{"rows": [[0, 1]]}`), hdr(), 400, `no "data" array`},
		{"data not an array", "POST", "/echo", []byte(`{"data": "x"}`), hdr(), 400, `"data" is not an array`},
		{"row not an array", "POST", "/echo", []byte(`{"data": [[0, 1], {"1": 2}]}`), hdr(), 400, "row 1 of the request is not an array"},
		{"rows not from 0", "POST", "/echo", []byte(`{"data": [[1, 1], [2, 2]]}`), hdr(), 400, "row 0 of the request is numbered 1"},
		{"rows out of order", "POST", "/echo", []byte(`{"data": [[0, 1], [2, 2], [1, 3]]}`), hdr(), 400, "row 1 of the request is numbered 2"},
		{"too large", "POST", "/echo", rows(strings.Repeat("x", max)), hdr(), 413, "over the service's limit of 64 KB"},
		{"gzip bomb", "POST", "/echo", bomb, hdr("content-encoding", "gzip"), 413, "over the service's limit of 64 KB"},
		{"zstd", "POST", "/echo", good, hdr("content-encoding", "zstd"), 415, `Content-Encoding "zstd" is not supported`},
		{"unknown route", "POST", "/sentiment-v9", good, hdr(), 404, "no function is served at /sentiment-v9; this service serves /echo."},
		{"unknown nested route", "GET", "/echo/extra", nil, hdr(), 404, "no function is served at /echo/extra"},
		{"wrong method", "PUT", "/echo", good, hdr(), 405, "method PUT is not allowed"},
		{"unknown batch", "GET", "/echo", nil, sfHeaders("echo", "never-sent"), 404, "batch never-sent of function echo is unknown or has expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do(tc.method, tc.path, bytes.NewReader(tc.body), tc.header...)
			if r.Status != tc.status || !strings.Contains(r.Body, tc.want) {
				t.Errorf("%s %s = %v, want %d containing %q", tc.method, tc.path, r, tc.status, tc.want)
			}
			checkSentence(t, r)
		})
	}
	// Compressed bodies are decoded, and their size limit applies to the decoded body.
	checkOK(t, s.post("echo", "gzip", gz(good), "content-encoding", "gzip"), echoed("a", "b"))
	checkOK(t, s.post("echo", "deflate", df(good), "content-encoding", "deflate"), echoed("a", "b"))
	under := rows(strings.Repeat("y", max-40))
	checkOK(t, s.post("echo", "gzip-big", gz(under), "content-encoding", "gzip"), echoed(strings.Repeat("y", max-40)))
	// Bad input harmed nothing: a good batch still works, and so does health.
	checkOK(t, s.post("echo", "good", good), echoed("a", "b"))
	if r := s.do("GET", "/readyz", nil); r.Status != 200 {
		t.Errorf("/readyz after bad input = %v", r)
	}
}

// (9) Operation basics: health, logs with the batch's attributes, JSON logs.
func TestOperation(t *testing.T) {
	t.Parallel()
	t.Run("health and text logs", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, serverConfig{args: []string{"--sync-wait", "2s"}, fns: []asyncfn.Function{echoFn}})
		for _, path := range []string{"/healthz", "/readyz"} {
			if r := s.do("GET", path, nil); r.Status != 200 {
				t.Errorf("GET %s = %v", path, r)
			}
		}
		checkOK(t, s.post("echo", "log-1", rows("a"), "sf-external-function-current-query-id", "01b2c3d4-query"), echoed("a"))
		eventually(t, "the log of the batch", func() bool {
			for _, line := range strings.Split(s.Stderr.String(), "\n") {
				if strings.Contains(line, "function=echo") && strings.Contains(line, "batch_id=log-1") && strings.Contains(line, "query_id=01b2c3d4-query") &&
					strings.Contains(line, "batch succeeded") {
					return true
				}
			}
			return false
		})
		if !strings.Contains(s.Stderr.String(), "batch accepted") {
			t.Error("no log line for the accepted batch")
		}
	})
	t.Run("json logs", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, serverConfig{args: []string{"--sync-wait", "2s", "--log-format", "json"}, fns: []asyncfn.Function{echoFn}})
		checkOK(t, s.post("echo", "log-2", rows("a"), "sf-external-function-current-query-id", "q-json"), echoed("a"))
		eventually(t, "a JSON log of the batch", func() bool {
			found := false
			for _, line := range strings.Split(strings.TrimSpace(s.Stderr.String()), "\n") {
				var rec map[string]any
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("log line %q is not JSON: %v", line, err)
				}
				if rec["function"] == "echo" && rec["batch_id"] == "log-2" && rec["query_id"] == "q-json" && rec["msg"] == "batch succeeded" {
					found = true
				}
			}
			return found
		})
	})
}

// (9) Graceful shutdown: a running batch is handed back without counting the attempt, and
// the next process on the same file runs it; a held poll is answered at once.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	store := filepath.Join(t.TempDir(), "a.db")
	g := newGate()
	fn := asyncfn.Function{Name: "slow", Func: g.Func(), MaxAttempts: 1}
	args := []string{"--sync-wait", "0", "--poll-wait", "10s", "--shutdown-timeout", "100ms"}
	s := startServer(t, serverConfig{store: store, args: args, fns: []asyncfn.Function{fn}})
	if r := s.post("slow", "g1", rows("a", "b")); r.Status != http.StatusAccepted {
		t.Fatalf("POST = %v", r)
	}
	g.waitStarted(t)
	type answer struct {
		r   reply
		err error
	}
	held := make(chan answer, 1)
	go func() {
		r, err := s.try(http.MethodGet, "/slow", nil, sfHeaders("slow", "g1")...)
		held <- answer{r, err}
	}()
	time.Sleep(50 * time.Millisecond) // let the GET be held (not an assertion)
	if err := s.Stop(); err != nil {
		t.Fatalf("Main = %v, want nil after a graceful shutdown", err)
	}
	select {
	case a := <-held:
		switch {
		case a.err != nil:
			t.Logf("the GET did not reach the server before its shutdown (%v): not checked", a.err)
		case a.r.Status != http.StatusAccepted:
			t.Errorf("the held GET during shutdown = %v, want 202", a.r)
		case time.Since(a.r.Sent) >= 10*time.Second:
			t.Errorf("the held GET was answered after %v, at the end of its poll-wait", time.Since(a.r.Sent))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the held GET was not answered at shutdown")
	}

	db, err := sqlite.Open(context.Background(), store, sqlite.Options{})
	if err != nil {
		t.Fatalf("reopening the store after shutdown: %v", err)
	}
	b, err := db.Get(context.Background(), asyncfn.Key{Function: "slow", BatchID: "g1"}, time.Now(), false)
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if b.State != asyncfn.Queued || b.Attempts != 0 || b.Error != nil {
		t.Errorf("after shutdown the batch is %s with %d attempts (error %v); want queued, 0, none", b.State, b.Attempts, b.Error)
	}

	g.open()
	s2 := startServer(t, serverConfig{store: store, args: args, fns: []asyncfn.Function{fn}})
	checkOK(t, s2.await("slow", "g1", http.StatusOK), echoed("a", "b"))
	if n := g.calls.Load(); n != 2 {
		t.Errorf("the function ran %d times, want 2 (interrupted, then run again)", n)
	}
}

// (10) Configuration: ASYNCFN_* variables, flags over variables, errors that name the
// flag or variable, and help that lists each flag with its default.
func TestConfiguration(t *testing.T) {
	t.Parallel()
	t.Run("env", func(t *testing.T) {
		t.Parallel()
		store := filepath.Join(t.TempDir(), "env.db")
		env := map[string]string{
			"ASYNCFN_ADDR": "127.0.0.1:0", "ASYNCFN_STORE": store, "ASYNCFN_WORKERS": "0",
			"ASYNCFN_SYNC_WAIT": "0", "ASYNCFN_POLL_WAIT": "0", "ASYNCFN_MAX_QUEUED": "1",
		}
		s, err := runMain(t, []string{"serve"}, env, echoFn)
		if err != nil {
			t.Fatal(err)
		}
		if s.URL == "" || !strings.Contains(s.Banner, "store "+store) || !strings.Contains(s.Banner, "0 workers") {
			t.Fatalf("banner %q does not show the settings from the environment", s.Banner)
		}
		if r := s.post("echo", "e1", rows(1)); r.Status != http.StatusAccepted {
			t.Fatalf("POST = %v", r)
		}
		if r := s.post("echo", "e2", rows(2)); r.Status != http.StatusTooManyRequests {
			t.Errorf("POST past ASYNCFN_MAX_QUEUED=1 = %v, want 429", r)
		}
	})
	t.Run("flag beats env", func(t *testing.T) {
		t.Parallel()
		env := map[string]string{"ASYNCFN_ADDR": "256.0.0.1:99999", "ASYNCFN_MAX_QUEUED": "1", "ASYNCFN_WORKERS": "0", "ASYNCFN_SYNC_WAIT": "1h"}
		s := startServer(t, serverConfig{env: env, args: []string{"--max-queued", "5", "--sync-wait", "0", "--workers", "0"}, fns: []asyncfn.Function{echoFn}})
		for _, id := range []string{"f1", "f2", "f3"} {
			if r := s.post("echo", id, rows(id)); r.Status != http.StatusAccepted {
				t.Errorf("POST %s = %v, want 202 (--max-queued 5 beats ASYNCFN_MAX_QUEUED=1)", id, r)
			}
		}
	})
	t.Run("bad values", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		for _, tc := range []struct {
			args []string
			env  map[string]string
			want string
		}{
			{[]string{"--sync-wait", "soon"}, nil, "sync-wait"},
			{nil, map[string]string{"ASYNCFN_SYNC_WAIT": "soon"}, "ASYNCFN_SYNC_WAIT"},
			{nil, map[string]string{"ASYNCFN_MAX_QUEUED": "many"}, "ASYNCFN_MAX_QUEUED"},
			{[]string{"--poll-wait", "-1s"}, nil, "--poll-wait"},
			{[]string{"--retention", "0"}, nil, "--retention"},
			{[]string{"--grace", "0s"}, nil, "--grace"},
			{[]string{"--max-queued", "0"}, nil, "--max-queued"},
			{nil, map[string]string{"ASYNCFN_WORKERS": "-1"}, "--workers"},
			{[]string{"--max-attempts", "0"}, nil, "--max-attempts"},
			{[]string{"--function-timeout", "0"}, nil, "--function-timeout"},
			{[]string{"--backoff", "0"}, nil, "--backoff"},
			{[]string{"--sweep-interval", "0"}, nil, "--sweep-interval"},
			{[]string{"--lease", "1ms"}, nil, "lease"},
			{[]string{"--log-format", "xml"}, nil, "--log-format"},
			{[]string{"--log-level", "loud"}, nil, "--log-level"},
			{[]string{"--store", "redis://localhost:6379"}, nil, "--store"},
			{[]string{"--addr", "256.0.0.1:99999"}, nil, "--addr"},
			{[]string{"--no-such-flag"}, nil, "no-such-flag"},
			{[]string{"extra"}, nil, `unexpected argument "extra"`},
		} {
			args := append([]string{"serve", "--addr", "127.0.0.1:0", "--store", filepath.Join(dir, "bad.db")}, tc.args...)
			if tc.args != nil && tc.args[0] == "--store" {
				args = append([]string{"serve", "--addr", "127.0.0.1:0"}, tc.args...)
			}
			var stderr syncbuf.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			err := cli.Main(ctx, args, func(k string) string { return tc.env[k] }, &syncbuf.Buffer{}, &stderr, cli.Options{Functions: []asyncfn.Function{echoFn}})
			cancel()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Main %v env %v = %v, want an error naming %s", tc.args, tc.env, err, tc.want)
			}
		}
		if err := cli.Main(context.Background(), []string{"serve-all"}, func(string) string { return "" }, &syncbuf.Buffer{}, &syncbuf.Buffer{}, cli.Options{}); err == nil ||
			!strings.Contains(err.Error(), `unknown command "serve-all"`) {
			t.Errorf("Main of an unknown command = %v", err)
		}
	})
	t.Run("help", func(t *testing.T) {
		t.Parallel()
		for cmd, flags := range map[string][]string{
			"serve":   {"--addr", "--store", "--sync-wait", "--poll-wait", "--max-queued", "--retention", "--grace", "--workers", "--max-body-bytes", "--shutdown-timeout", "--log-format"},
			"worker":  {"--store", "--workers", "--lease", "--addr"},
			"migrate": {"--store"},
		} {
			var stdout, stderr syncbuf.Buffer
			err := cli.Main(context.Background(), []string{cmd, "--help"}, func(string) string { return "" }, &stdout, &stderr, cli.Options{Functions: []asyncfn.Function{echoFn}})
			if !errors.Is(err, flag.ErrHelp) {
				t.Errorf("%s --help = %v, want flag.ErrHelp", cmd, err)
			}
			help := stderr.String()
			for _, f := range flags {
				if !strings.Contains(help, f+"\n") {
					t.Errorf("%s --help does not list %s:\n%s", cmd, f, help)
				}
			}
			if !strings.Contains(help, "(default ") || !strings.Contains(help, "env ASYNCFN_STORE") {
				t.Errorf("%s --help shows no defaults or variables:\n%s", cmd, help)
			}
		}
		var stderr syncbuf.Buffer
		cli.Main(context.Background(), []string{"serve", "--help"}, func(string) string { return "" }, &syncbuf.Buffer{}, &stderr, cli.Options{})
		for _, want := range []string{"default 1s; env ASYNCFN_SYNC_WAIT", "default 10s; env ASYNCFN_POLL_WAIT", "default 1000; env ASYNCFN_MAX_QUEUED",
			"default 12h0m0s; env ASYNCFN_RETENTION", "default 10m0s; env ASYNCFN_GRACE", "default 127.0.0.1:8080; env ASYNCFN_ADDR"} {
			if !strings.Contains(stderr.String(), want) {
				t.Errorf("serve --help lacks %q", want)
			}
		}
	})
}

// The worker and migrate commands, and the store's lock (7: one process per file).
func TestCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	store := filepath.Join(dir, "sub", "a.db")
	var stdout syncbuf.Buffer
	if err := cli.Main(context.Background(), []string{"migrate", "--store", store}, func(string) string { return "" }, &stdout, &syncbuf.Buffer{}, cli.Options{}); err != nil {
		t.Fatalf("migrate = %v", err)
	}
	if !strings.Contains(stdout.String(), "is ready") {
		t.Errorf("migrate printed %q", stdout.String())
	}

	// A front end without workers, then a worker process: on SQLite they cannot share the
	// file, so the worker waits for the front end to stop and then runs its batch.
	front := startServer(t, serverConfig{store: store, args: []string{"--workers", "0", "--sync-wait", "0", "--poll-wait", "0"}, fns: []asyncfn.Function{echoFn}})
	if r := front.post("echo", "w1", rows("a")); r.Status != http.StatusAccepted {
		t.Fatalf("POST = %v", r)
	}
	_, err := runMain(t, []string{"worker", "--store", store, "--workers", "1"}, nil, echoFn)
	if err == nil || !strings.Contains(err.Error(), "in use by another asyncfn process") {
		t.Errorf("a second process on the same file = %v, want an error saying it is in use", err)
	}
	if err := front.Stop(); err != nil {
		t.Fatal(err)
	}
	w, err := runMain(t, []string{"worker", "--store", store, "--workers", "1", "--addr", "127.0.0.1:0"}, nil, echoFn)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(w.Banner, "health on http://") {
		t.Fatalf("worker banner %q", w.Banner)
	}
	w.URL = "http://" + w.Banner[strings.LastIndex(w.Banner, "http://")+len("http://"):]
	if r := w.do("GET", "/readyz", nil); r.Status != 200 {
		t.Errorf("worker /readyz = %v", r)
	}
	eventually(t, "the worker to run the batch", func() bool {
		db, err := sql.Open("sqlite", "file:"+store+"?mode=ro&_pragma=busy_timeout(5000)")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var state string
		if err := db.QueryRow(`SELECT state FROM batches WHERE batch_id = 'w1'`).Scan(&state); err != nil {
			t.Fatal(err)
		}
		return state == "succeeded"
	})
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := runMain(t, []string{"worker", "--store", store, "--workers", "0"}, nil, echoFn); err == nil || !strings.Contains(err.Error(), "--workers") {
		t.Errorf("worker --workers 0 = %v, want an error naming --workers", err)
	}
	s := startServer(t, serverConfig{store: store, args: []string{"--poll-wait", "0"}, fns: []asyncfn.Function{echoFn}})
	checkOK(t, s.get("echo", "w1"), echoed("a"))
}

// (7) Durability: the real binary, killed with SIGKILL while batches are queued and
// running, restarted on the same file, answers every batch it acknowledged with a 202,
// exactly; a batch answered 200 carried its exact rows.
func TestKillAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and kills the real binary")
	}
	t.Parallel()
	bin := binary(t)
	// With --sync-wait 0 every batch goes through the queue; with a tiny budget, the one
	// a free worker takes runs from memory and is stored whole just before its 202.
	for _, syncWait := range []string{"0", "1ms"} {
		t.Run("sync-wait="+syncWait, func(t *testing.T) {
			store := filepath.Join(t.TempDir(), "a.db")
			start := func() (*exec.Cmd, *server) {
				return startBinary(t, bin, "serve", "--addr", "127.0.0.1:0", "--store", store, "--sync-wait", syncWait, "--poll-wait", "0", "--workers", "1")
			}

			cmd, s := start()
			const batches, rowsPerBatch = 30, 4096
			want := make([]string, batches)
			bodies := make([][]byte, batches)
			for b := range batches {
				values := make([]any, rowsPerBatch)
				for i := range values {
					values[i] = fmt.Sprintf("batch %02d row %04d: %s", b, i, strings.Repeat("z", i%17))
				}
				bodies[b], want[b] = rows(values...), echoed(values...)
			}
			statuses := make([]int, batches)
			var wg sync.WaitGroup
			for b := range batches {
				wg.Go(func() {
					req, _ := http.NewRequest(http.MethodPost, s.URL+"/echo", bytes.NewReader(bodies[b]))
					req.Header.Set("sf-external-function-query-batch-id", fmt.Sprintf("kill-%02d", b))
					resp, err := s.client.Do(req)
					if err != nil {
						return // not accepted
					}
					answer, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					statuses[b] = resp.StatusCode
					if resp.StatusCode == http.StatusOK && string(answer) != want[b] {
						t.Errorf("batch %d answered 200 with %d bytes, want %d bytes, the same rows", b, len(answer), len(want[b]))
					}
				})
			}
			wg.Wait()
			kill9(t, cmd)

			// A batch answered 200 on its POST has delivered its rows, and may be recorded
			// just after (a kill in between loses only the record); one answered 202 is
			// stored before it.
			accepted, answered := 0, 0
			for b, st := range statuses {
				switch st {
				case http.StatusAccepted:
					accepted++
				case http.StatusOK:
					answered++
				default:
					t.Errorf("POST of batch %d = %d", b, st)
				}
			}
			// What the kill interrupted, as the file holds it (the dead process's lock is gone).
			st := storeStats(t, store)
			held := st.Queued + st.Running + st.Succeeded + st.Failed
			t.Logf("at the kill: %d accepted, %d answered; %d queued, %d running, %d done", accepted, answered, st.Queued, st.Running, st.Succeeded+st.Failed)
			if held < accepted || held > accepted+answered || st.Failed != 0 {
				t.Errorf("the store holds %+v for %d batches accepted and %d answered", st, accepted, answered)
			}

			_, s2 := start()
			for b, status := range statuses {
				if status != http.StatusAccepted {
					continue
				}
				r := s2.await("echo", fmt.Sprintf("kill-%02d", b), http.StatusOK)
				if r.Body != want[b] {
					t.Errorf("batch %d answered %d bytes, want %d bytes, the same rows", b, len(r.Body), len(want[b]))
				}
			}
		})
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "...\n" + s[len(s)-n:]
}
