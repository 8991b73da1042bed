package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/postgres"
	"github.com/asyncfn/asyncfn/postgres/pgtest"
	"github.com/asyncfn/asyncfn/storetest"
)

var (
	ctx   = context.Background()
	quiet = slog.New(slog.DiscardHandler)
	t0    = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) asyncfn.Store {
		return open(t, pgtest.Schema(t))
	})
}

// pair opens two stores on one schema, as two processes sharing the database do.
func pair(t *testing.T) (a, b asyncfn.Store) {
	dsn := pgtest.Schema(t)
	return open(t, dsn), open(t, dsn)
}

func TestShared(t *testing.T) { storetest.RunShared(t, pair) }

func TestNotifier(t *testing.T) { storetest.RunNotifier(t, pair) }

// TestUnreachable cuts the store off the database through a proxy.
func TestUnreachable(t *testing.T) {
	storetest.RunUnreachable(t, func(t *testing.T) (asyncfn.Store, func(), func()) {
		p, proxied := pgtest.StartProxy(t, pgtest.Schema(t))
		restore := func() {
			if err := p.Up(); err != nil {
				t.Fatal(err)
			}
		}
		return open(t, proxied), p.Down, restore
	})
}

// open opens a store on dsn, closed when the test ends.
func open(t testing.TB, dsn string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(ctx, dsn, postgres.Options{MaxConns: 4, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// connect opens a plain connection to dsn, closed when the test ends: the test's own
// window on the database.
func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	return conn
}

func newBatch(fn, id string, created time.Time) *asyncfn.Batch {
	payload := []byte(fmt.Sprintf(`{"data":[[0,%q]]}`, id))
	return &asyncfn.Batch{
		Key:         asyncfn.Key{Function: fn, BatchID: id},
		State:       asyncfn.Queued,
		Payload:     payload,
		Digest:      asyncfn.Digest(payload),
		Rows:        1,
		MaxAttempts: 3,
		CreatedAt:   created,
		ExpiresAt:   created.Add(12 * time.Hour),
	}
}

func mustCreate(t testing.TB, s asyncfn.Store, b *asyncfn.Batch) {
	t.Helper()
	if _, err := s.Create(ctx, b); err != nil {
		t.Fatalf("Create(%v): %v", b.Key, err)
	}
}

func claim(owner string, now time.Time, limit int) asyncfn.ClaimParams {
	return asyncfn.ClaimParams{Owner: owner, Now: now, Lease: 30 * time.Second, Limit: limit}
}

func TestOptionsSchema(t *testing.T) {
	for _, tt := range []struct {
		dsn    string
		opts   postgres.Options
		reason string
	}{
		{"postgres://127.0.0.1:1/test", postgres.Options{Schema: "Has-Capitals"}, `Options.Schema "Has-Capitals" is not a schema name`},
		{"postgres://127.0.0.1:1/test", postgres.Options{Schema: strings.Repeat("s", 57)}, "at most 56 bytes"},
		{"postgres://127.0.0.1:1/test?search_path=a,public", postgres.Options{}, `the DSN's search_path "a,public" is not a schema name`},
	} {
		_, err := postgres.Open(ctx, tt.dsn, tt.opts)
		if err == nil || !strings.Contains(err.Error(), tt.reason) {
			t.Errorf("Open(%q, %+v) = %v, want an error saying %s", tt.dsn, tt.opts, err, tt.reason)
		}
	}
}

func TestOpenUnreachable(t *testing.T) {
	// Nothing listens on port 1: the connection is refused at once.
	_, err := postgres.Open(ctx, "postgres://postgres@127.0.0.1:1/test?connect_timeout=5", postgres.Options{})
	if !errors.Is(err, asyncfn.ErrUnavailable) {
		t.Fatalf("Open of an unreachable server: %v, want ErrUnavailable", err)
	}
	err = postgres.Migrate(ctx, "postgres://postgres@127.0.0.1:1/test?connect_timeout=5", postgres.Options{})
	if !errors.Is(err, asyncfn.ErrUnavailable) {
		t.Fatalf("Migrate on an unreachable server: %v, want ErrUnavailable", err)
	}
}

// schemaOf returns the schema that pgtest.Schema put in dsn.
func schemaOf(t testing.TB, dsn string) string {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.RuntimeParams["search_path"]
}

func TestMigrateConcurrently(t *testing.T) {
	dsn := pgtest.Schema(t)
	schema := schemaOf(t, dsn)
	// Start from nothing: the migrations create the schema, and must not race for it.
	pgtest.Exec(t, dsn, "DROP SCHEMA "+schema)
	const migrators, openers = 6, 3
	var wg sync.WaitGroup
	errs := make(chan error, migrators+openers)
	for range migrators {
		wg.Go(func() { errs <- postgres.Migrate(ctx, dsn, postgres.Options{Logger: quiet}) })
	}
	for range openers {
		wg.Go(func() {
			s, err := postgres.Open(ctx, dsn, postgres.Options{MaxConns: 2, Logger: quiet})
			if err == nil {
				s.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent migration: %v", err)
		}
	}
	var n, distinct int
	if err := connect(t, dsn).QueryRow(ctx, "SELECT count(*), count(DISTINCT version) FROM schema_migrations").Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n == 0 || n != distinct {
		t.Fatalf("schema_migrations holds %d rows for %d versions; want each version once", n, distinct)
	}
	s := open(t, dsn)
	mustCreate(t, s, newBatch("echo", "after-migrations", t0))
}

func TestOptionsSchemaWins(t *testing.T) {
	dsn := pgtest.Schema(t)
	other := schemaOf(t, dsn) + "_other"
	t.Cleanup(func() { pgtest.Exec(t, dsn, "DROP SCHEMA IF EXISTS "+other+" CASCADE") })
	s, err := postgres.Open(ctx, dsn, postgres.Options{Schema: other, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustCreate(t, s, newBatch("echo", "x", t0))
	var n int
	if err := connect(t, dsn).QueryRow(ctx, "SELECT count(*) FROM "+other+".batches").Scan(&n); err != nil || n != 1 {
		t.Fatalf("batches in the schema of Options.Schema: %d, %v; want 1", n, err)
	}
}

// lockRow holds a row lock on the batch id until the test ends, as a slow transaction of
// another process would.
func lockRow(t *testing.T, dsn, id string) {
	t.Helper()
	tx, err := connect(t, dsn).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(ctx) })
	var n int
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM (SELECT FROM batches WHERE batch_id = $1 FOR UPDATE) AS locked", id).Scan(&n); err != nil || n != 1 {
		t.Fatalf("locking %s: %d rows, %v", id, n, err)
	}
}

func TestClaimSkipsLockedRows(t *testing.T) {
	dsn := pgtest.Schema(t)
	s := open(t, dsn)
	for i, id := range []string{"locked", "free1", "free2"} {
		mustCreate(t, s, newBatch("echo", id, t0.Add(time.Duration(i)*time.Second)))
	}
	lockRow(t, dsn, "locked")
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	got, err := s.Claim(wctx, claim("w", t0.Add(time.Minute), 10))
	if err != nil {
		t.Fatalf("Claim beside a locked row: %v (did it wait for the lock?)", err)
	}
	var ids []string
	for _, b := range got {
		ids = append(ids, b.Key.BatchID)
	}
	if strings.Join(ids, ",") != "free1,free2" {
		t.Fatalf("Claim = %v, want free1,free2 (the locked row skipped)", ids)
	}
}

func TestSweepSkipsLockedRows(t *testing.T) {
	dsn := pgtest.Schema(t)
	s := open(t, dsn)
	for _, id := range []string{"locked", "a", "b", "c"} {
		b := newBatch("echo", id, t0)
		b.ExpiresAt = t0.Add(time.Minute)
		mustCreate(t, s, b)
	}
	lockRow(t, dsn, "locked")
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if n, err := s.Sweep(wctx, t0.Add(time.Hour), 100); err != nil || n != 3 {
		t.Fatalf("Sweep beside a locked row = %d, %v; want 3 without waiting", n, err)
	}
}

// terminate ends the server processes of the connections named appName, and waits for
// them to exit; it returns how many there were.
func terminate(t *testing.T, admin *pgx.Conn, appName, queryLike string) int {
	t.Helper()
	var n int
	err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity
		WHERE application_name = $1 AND query LIKE $2 AND pid <> pg_backend_pid()`, appName, queryLike).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSurvivesTerminatedConnections(t *testing.T) {
	dsn := pgtest.Schema(t)
	appName := "asyncfn_test_" + schemaOf(t, dsn)
	s := open(t, pgtest.Param(dsn, "application_name", appName))
	mustCreate(t, s, newBatch("echo", "before", t0))
	// Open a few connections at once, so that the pool holds several to be killed.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, err := s.Stats(ctx, t0); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := terminate(t, connect(t, dsn), appName, "%"); n == 0 {
		t.Fatal("no connection of the store found to terminate")
	}
	// Each dead connection fails one call, with ErrUnavailable, and leaves the pool; new
	// ones take their place.
	ok := 0
	for i := 0; ok < 5; i++ {
		if i == 20 {
			t.Fatalf("no recovery after %d calls", i)
		}
		if _, err := s.Get(ctx, asyncfn.Key{Function: "echo", BatchID: "before"}, t0, true); err == nil {
			ok++
		} else if errors.Is(err, asyncfn.ErrUnavailable) {
			t.Logf("call %d: %v", i, err)
			ok = 0
		} else {
			t.Fatalf("call on a terminated connection: %v, want ErrUnavailable", err)
		}
	}
	mustCreate(t, s, newBatch("echo", "after", t0))
}

// Stores on different schemas of one database hear only their own schema's events.
func TestListenSchemasApart(t *testing.T) {
	a, b := open(t, pgtest.Schema(t)), open(t, pgtest.Schema(t))
	la, lb := storetest.Listen(t, a), storetest.Listen(t, b)
	la.Ready(t, a)
	lb.Ready(t, b)
	mustCreate(t, b, newBatch("echo", "in-b", t0))
	lb.Await(t, asyncfn.Event{Key: asyncfn.Key{Function: "echo", BatchID: "in-b"}, State: asyncfn.Queued})
	// Events of one transaction arrive in order, so by now la would have had it.
	mustCreate(t, a, newBatch("echo", "in-a", t0))
	la.Await(t, asyncfn.Event{Key: asyncfn.Key{Function: "echo", BatchID: "in-a"}, State: asyncfn.Queued})
	if la.Heard(func(e asyncfn.Event) bool { return e.Key.BatchID == "in-b" }) {
		t.Fatal("a store heard the events of another schema")
	}
}

// A finish that records its answer's delivery (the POST that brought the batch answered
// it) publishes no event: its client has the answer, and one notification per batch
// cost every listening process and the server about a tenth of the throughput of 1-row
// batches. A finish not delivered is heard, as before.
func TestDeliveredFinishUnpublished(t *testing.T) {
	s := open(t, pgtest.Schema(t))
	l := storetest.Listen(t, s)
	l.Ready(t, s)
	grace := t0.Add(10 * time.Minute)
	for _, id := range []string{"ok-served", "bad-served", "ok", "bad"} {
		b := newBatch("echo", id, t0)
		b.State, b.Owner, b.LeaseUntil, b.StartedAt, b.Attempts = asyncfn.Running, "front", t0.Add(time.Minute), t0, 1
		mustCreate(t, s, b)
		p := asyncfn.Succeed(t0, []byte(`{"data":[[0,1]]}`))
		if strings.HasPrefix(id, "bad") {
			p = asyncfn.Fail(t0, &asyncfn.Error{Kind: asyncfn.InvalidInput, Message: "no."})
		}
		if strings.HasSuffix(id, "served") {
			p.GraceUntil = grace
		}
		if err := s.Finish(context.Background(), b.Key, "front", p); err != nil {
			t.Fatalf("Finish %s: %v", id, err)
		}
	}
	// Events of one connection arrive in commit order: by the last, the others are in.
	l.Await(t, asyncfn.Event{Key: asyncfn.Key{Function: "echo", BatchID: "ok"}, State: asyncfn.Succeeded})
	l.Await(t, asyncfn.Event{Key: asyncfn.Key{Function: "echo", BatchID: "bad"}, State: asyncfn.Failed})
	if l.Heard(func(e asyncfn.Event) bool { return strings.HasSuffix(e.Key.BatchID, "served") }) {
		t.Error("a finish with its answer delivered was published")
	}
}

// A listening connection the server terminates (an administrator, a failover) ends
// Listen with ErrUnavailable, and the caller can listen again. (A connection cut on the
// way is storetest.RunUnreachable's.)
func TestListenTerminated(t *testing.T) {
	dsn := pgtest.Schema(t)
	appName := "asyncfn_test_" + schemaOf(t, dsn)
	s := open(t, pgtest.Param(dsn, "application_name", appName))
	l := storetest.Listen(t, s)
	l.Ready(t, s)
	if n := terminate(t, connect(t, dsn), appName, "LISTEN %"); n != 1 {
		t.Fatalf("%d listening connections terminated, want 1", n)
	}
	if err := l.Returned(t, 10*time.Second); !errors.Is(err, asyncfn.ErrUnavailable) {
		t.Fatalf("Listen on a terminated connection returned %v, want ErrUnavailable", err)
	}
	// The caller listens again.
	storetest.Listen(t, s).Ready(t, s)
}

// The abandoned batches fail in SQL, with asyncfn.AbandonedError's words exactly, whether
// Claim or ClaimKey finds them.
func TestAbandonedError(t *testing.T) {
	s := open(t, pgtest.Schema(t))
	byClaim, byKey := newBatch("echo", "by-claim", t0), newBatch("other", "by-key", t0)
	byClaim.MaxAttempts, byKey.MaxAttempts = 2, 1
	mustCreate(t, s, byClaim)
	mustCreate(t, s, byKey)
	for i := range 2 {
		if _, err := s.ClaimKey(ctx, byClaim.Key, claim("dies", t0.Add(time.Duration(i)*time.Hour), 1)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ClaimKey(ctx, byKey.Key, claim("dies", t0, 1)); err != nil {
		t.Fatal(err)
	}
	later := t0.Add(3 * time.Hour)
	p := claim("w", later, 10)
	p.Functions = []string{"echo"}
	if got, err := s.Claim(ctx, p); err != nil || len(got) != 0 {
		t.Fatalf("Claim = %d batches, %v; want none", len(got), err)
	}
	if _, err := s.ClaimKey(ctx, byKey.Key, claim("w", later, 1)); !errors.Is(err, asyncfn.ErrNotClaimable) {
		t.Fatalf("ClaimKey of an abandoned batch: %v, want ErrNotClaimable", err)
	}
	for _, b := range []*asyncfn.Batch{byClaim, byKey} {
		got, err := s.Get(ctx, b.Key, later, false)
		if err != nil {
			t.Fatal(err)
		}
		if want := asyncfn.AbandonedError(b.MaxAttempts); got.State != asyncfn.Failed || got.Error == nil || *got.Error != *want {
			t.Errorf("%s: %s, error %+v; want failed with %+v", b.Key.BatchID, got.State, got.Error, want)
		}
		if !got.FinishedAt.Equal(later) || got.Owner != "" || !got.LeaseUntil.IsZero() {
			t.Errorf("%s: finished at %v, owner %q, lease until %v; want %v, no owner, no lease", b.Key.BatchID, got.FinishedAt, got.Owner, got.LeaseUntil, later)
		}
	}
}

// TestReadOnly (correctness issue, defect 7): a server that refuses writes (a standby
// after a failover, a session made read-only) is ErrNoWrites, which the front end answers
// 503, and Ping says so, so that /readyz fails.
func TestReadOnly(t *testing.T) {
	t.Parallel()
	dsn := pgtest.Schema(t)
	open(t, dsn) // migrated while writable
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	ro := open(t, dsn+sep+"options=-c%20default_transaction_read_only%3Don")
	_, err := ro.Create(ctx, newBatch("echo", "b", t0))
	if !errors.Is(err, asyncfn.ErrNoWrites) || !errors.Is(err, asyncfn.ErrUnavailable) {
		t.Errorf("Create on a read-only server = %v, want ErrNoWrites", err)
	}
	if err := ro.Ping(ctx); !errors.Is(err, asyncfn.ErrNoWrites) {
		t.Errorf("Ping of a read-only server = %v, want ErrNoWrites", err)
	}
}
