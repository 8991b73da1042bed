package cli_test

// End-to-end tests of asyncfn scaled out on PostgreSQL (issue 5): several cli.Main
// processes, front ends (serve --workers 0) and workers (worker), sharing one schema.
// They skip without ASYNCFN_TEST_POSTGRES, and fail under CI without it (pgtest).

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/cli"
	"github.com/asyncfn/asyncfn/internal/syncbuf"
	"github.com/asyncfn/asyncfn/postgres/pgtest"
)

// freshSchema returns the test server's DSN with search_path naming a schema that does
// not exist yet (the processes under test create it), dropped when the test ends.
func freshSchema(t *testing.T) (dsn, schema string) {
	t.Helper()
	base := pgtest.DSN(t)
	schema = "asyncfn_test_" + strings.ToLower(rand.Text()[:12])
	t.Cleanup(func() { pgtest.Exec(t, base, "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
	return pgtest.Param(base, "search_path", schema), schema
}

// pgQuery runs a query on a connection of its own and scans its single row into dest.
func pgQuery(t *testing.T, dsn, sql string, dest ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, sql).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// startWorker runs `worker --store DSN ARGS...` in-process and waits for its banner.
func startWorker(t *testing.T, dsn string, args []string, fns ...asyncfn.Function) *server {
	t.Helper()
	args = append([]string{"worker", "--store", dsn}, args...)
	w, err := runMain(t, args, nil, fns...)
	if err != nil {
		t.Fatalf("cli.Main %v: %v", args, err)
	}
	if !strings.HasPrefix(w.Banner, "asyncfn: worker running ") {
		t.Fatalf("worker banner %q", w.Banner)
	}
	return w
}

// A batch POSTed to one front end is run by a worker process and answered by a GET to
// another front end; a GET held open there is answered as soon as the worker finishes
// (LISTEN/NOTIFY), on that first GET; a worker idle on LISTEN takes the next batch.
func TestPostgresScaleOut(t *testing.T) {
	t.Parallel()
	dsn := pgtest.Schema(t)
	g := newGate()
	// The front ends only look the functions up; the worker runs them.
	fronts := []asyncfn.Function{{Name: "slow", Func: asyncfn.Echo}, echoFn}
	a := startServer(t, serverConfig{store: dsn, args: []string{"--workers", "0", "--sync-wait", "0", "--poll-wait", "0"}, fns: fronts})
	b := startServer(t, serverConfig{store: dsn, args: []string{"--workers", "0", "--sync-wait", "0", "--poll-wait", "5s"}, fns: fronts})
	if !strings.Contains(a.Banner, "0 workers") {
		t.Errorf("front end banner %q does not say it runs no workers", a.Banner)
	}
	startWorker(t, dsn, []string{"--workers", "2"}, asyncfn.Function{Name: "slow", Func: g.Func()}, echoFn)
	t.Cleanup(g.open) // before the worker stops (cleanups run last-in first-out)

	values := []any{"first", 2.5, nil, map[string]any{"k": "v"}}
	if r := a.post("slow", "x1", rows(values...)); r.Status != http.StatusAccepted {
		t.Fatalf("POST to front end A = %v, want 202", r)
	}
	if got := g.waitStarted(t); got != "first" {
		t.Fatalf("the worker started the function on %q", got)
	}
	if r := b.with(t).do(http.MethodGet, "/slow", nil, sfHeaders("slow", "x1")...); r.Status != http.StatusAccepted {
		// poll-wait 5s: this GET is held until the batch finishes or 5 s pass; the batch
		// is held by the gate, so 202.
		t.Fatalf("GET of a running batch on front end B = %v, want 202 after its poll wait", r)
	}

	// A GET held on B while the worker runs the batch: answered 200 when it finishes.
	held := make(chan reply, 1)
	go func() {
		// Not b.get: t.Fatal must not be called outside the test's goroutine.
		req, _ := http.NewRequest(http.MethodGet, b.URL+"/slow", nil)
		h := sfHeaders("slow", "x1")
		for i := 0; i+1 < len(h); i += 2 {
			req.Header[h[i]] = []string{h[i+1]}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			held <- reply{Status: -1, Body: err.Error()}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			held <- reply{Status: -1, Body: err.Error()}
			return
		}
		held <- reply{Status: resp.StatusCode, Header: resp.Header, Body: string(body)}
	}()
	select {
	case r := <-held:
		t.Fatalf("the held GET was answered %v while the batch was running", r)
	case <-time.After(300 * time.Millisecond): // let the GET reach B and be held
	}
	opened := time.Now()
	g.open()
	select {
	case r := <-held:
		checkOK(t, r, echoed(values...))
		t.Logf("the held GET on front end B was answered %v after the batch was released", time.Since(opened).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatal("the held GET on front end B was not answered within 30s")
	}
	// Either front end answers it again (within the grace period), the same.
	checkOK(t, a.get("slow", "x1"), echoed(values...))

	// The worker is idle, waiting on LISTEN: a new batch is taken and run.
	more := make([]any, 300)
	for i := range more {
		more[i] = fmt.Sprintf("row %d", i)
	}
	posted := time.Now()
	if r := a.post("echo", "x2", rows(more...)); r.Status != http.StatusAccepted {
		t.Fatalf("POST = %v, want 202", r)
	}
	checkOK(t, b.await("echo", "x2", http.StatusOK), echoed(more...))
	t.Logf("an idle worker ran a new batch, answered on the other front end, %v after its POST", time.Since(posted).Round(time.Millisecond))

	// A retried POST on the other front end answers from the stored state.
	if r := b.post("echo", "x2", rows(more...)); r.Status != http.StatusOK || r.Body != echoed(more...) {
		t.Errorf("POST retried on front end B = %d (%d bytes), want 200 with the rows", r.Status, len(r.Body))
	}
	if r := b.post("echo", "x2", rows("other")); r.Status != http.StatusConflict {
		t.Errorf("POST of another body under the same id on front end B = %v, want 409", r)
	}
}

// asyncfn migrate creates a schema that does not exist, is idempotent, and is safe from
// several processes at once; serve then starts on the migrated schema.
func TestPostgresMigrate(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("..", "postgres", "migrations", "*.sql"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations found in ../postgres/migrations: %v", err)
	}
	migrate := func(dsn string) error {
		var stdout, stderr syncbuf.Buffer
		err := cli.Main(context.Background(), []string{"migrate", "--store", dsn}, func(string) string { return "" }, &stdout, &stderr, cli.Options{})
		if err == nil && !strings.Contains(stdout.String(), "is ready") {
			return fmt.Errorf("migrate printed %q", stdout.String())
		}
		if err != nil {
			return fmt.Errorf("%v; stderr:\n%s", err, stderr.String())
		}
		return nil
	}
	check := func(t *testing.T, dsn, schema string) {
		t.Helper()
		var applied, tables int
		pgQuery(t, dsn, "SELECT count(*) FROM "+schema+".schema_migrations", &applied)
		if applied != len(files) {
			t.Errorf("schema_migrations holds %d migrations, want %d", applied, len(files))
		}
		pgQuery(t, dsn, "SELECT count(*) FROM pg_tables WHERE schemaname = '"+schema+"' AND tablename = 'batches'", &tables)
		if tables != 1 {
			t.Errorf("the table %s.batches does not exist", schema)
		}
	}

	t.Run("idempotent", func(t *testing.T) {
		t.Parallel()
		dsn, schema := freshSchema(t)
		for i := range 3 {
			if err := migrate(dsn); err != nil {
				t.Fatalf("migrate #%d: %v", i+1, err)
			}
		}
		check(t, dsn, schema)
		s := startServer(t, serverConfig{store: dsn, args: []string{"--workers", "1", "--sync-wait", "0", "--poll-wait", "0"}, fns: []asyncfn.Function{echoFn}})
		s.post("echo", "m1", rows("a"))
		checkOK(t, s.await("echo", "m1", http.StatusOK), echoed("a"))
		if err := migrate(dsn); err != nil { // on a schema in use
			t.Errorf("migrate of a schema in use: %v", err)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		t.Parallel()
		dsn, schema := freshSchema(t)
		errs := make([]error, 4)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Go(func() { errs[i] = migrate(dsn) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("migrate #%d of %d at once: %v", i+1, len(errs), err)
			}
		}
		check(t, dsn, schema)
	})
}

// Processes starting at once on a schema that does not exist yet all come up (the
// migrations serialize), and work together.
func TestPostgresConcurrentStart(t *testing.T) {
	t.Parallel()
	dsn, schema := freshSchema(t)
	const fronts = 2
	servers := make([]*server, fronts)
	errs := make([]error, fronts+1)
	var wg sync.WaitGroup
	for i := range fronts {
		wg.Go(func() {
			servers[i], errs[i] = runMain(t, []string{"serve", "--addr", "127.0.0.1:0", "--store", dsn, "--workers", "0", "--sync-wait", "0", "--poll-wait", "2s"}, nil, echoFn)
		})
	}
	wg.Go(func() {
		_, errs[fronts] = runMain(t, []string{"worker", "--store", dsn, "--workers", "2"}, nil, echoFn)
	})
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("process %d of %d started at once: %v", i+1, len(errs), err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for i, s := range servers {
		if s.URL == "" {
			t.Fatalf("server %d banner %q", i, s.Banner)
		}
	}
	var applied int
	pgQuery(t, dsn, "SELECT count(*) FROM "+schema+".schema_migrations", &applied)
	if applied == 0 {
		t.Error("no migration recorded")
	}
	for i, s := range servers {
		id := fmt.Sprint("c", i)
		if r := s.with(t).post("echo", id, rows(id)); r.Status != http.StatusAccepted {
			t.Fatalf("POST to server %d = %v", i, r)
		}
		checkOK(t, servers[(i+1)%fronts].with(t).await("echo", id, http.StatusOK), echoed(id))
	}
}

// A worker started with --addr answers /readyz from the shared store; without --addr it
// listens on nothing (several start on one machine without flags).
func TestPostgresWorkerHealth(t *testing.T) {
	t.Parallel()
	dsn := pgtest.Schema(t)
	for range 2 {
		startWorker(t, dsn, []string{"--workers", "1"}, echoFn)
	}
	w := startWorker(t, dsn, []string{"--workers", "1", "--addr", "127.0.0.1:0"}, echoFn)
	i := strings.LastIndex(w.Banner, "http://")
	if i < 0 {
		t.Fatalf("worker banner %q names no health address", w.Banner)
	}
	w.URL = strings.TrimSpace(w.Banner[i:])
	for _, path := range []string{"/healthz", "/readyz"} {
		if r := w.with(t).do(http.MethodGet, path, nil); r.Status != http.StatusOK {
			t.Errorf("worker %s = %v", path, r)
		}
	}
	if r := w.with(t).do(http.MethodGet, "/echo", nil, sfHeaders("echo", "h1")...); r.Status != http.StatusNotFound {
		t.Errorf("GET /echo on a worker = %v, want 404: a worker serves no functions", r)
	}
}

// A worker whose function finishes while the database is unreachable (a restart, a
// failover, a dropped connection) keeps the result and records it once the database is
// back: the function is not run again, and the attempt is not lost. With --max-attempts 1
// a lost attempt would fail a batch whose function succeeded.
func TestPostgresFinishDuringOutage(t *testing.T) {
	t.Parallel()
	dsn := pgtest.Schema(t)
	px, proxied := pgtest.StartProxy(t, dsn)
	g := newGate()
	var calls atomic.Int32
	// The front end stores each batch's attempts (--max-attempts) as it accepts it.
	front := startServer(t, serverConfig{store: dsn, args: []string{"--workers", "0", "--sync-wait", "0", "--poll-wait", "0", "--max-attempts", "1"}, fns: []asyncfn.Function{echoFn}})
	startWorker(t, proxied, []string{"--workers", "1", "--lease", "3s"},
		asyncfn.Function{Name: "echo", Func: counted(&calls, g.Func())})
	t.Cleanup(g.open) // before the worker stops

	if r := front.post("echo", "o1", rows("kept")); r.Status != http.StatusAccepted {
		t.Fatalf("POST = %v", r)
	}
	g.waitStarted(t)
	px.Down() // the worker loses the database while its function runs
	g.open()
	eventually(t, "the function to return", func() bool { return g.running.Load() == 0 })
	time.Sleep(500 * time.Millisecond) // the database stays away a while: setup, not a check
	if err := px.Up(); err != nil {
		t.Fatal(err)
	}

	r := front.await("echo", "o1", http.StatusOK) // today: 422, "its workers died 1 times"
	checkOK(t, r, echoed("kept"))
	if n := calls.Load(); n != 1 {
		t.Errorf("the function ran %d times, want 1: its result was thrown away", n)
	}
}
