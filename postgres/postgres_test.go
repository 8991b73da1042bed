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

func TestClaimAcrossStores(t *testing.T) {
	dsn := pgtest.Schema(t)
	stores := []*postgres.Store{open(t, dsn), open(t, dsn)}
	const batches = 120
	for i := range batches {
		mustCreate(t, stores[0], newBatch("echo", fmt.Sprint("b", i), t0.Add(time.Duration(i)*time.Millisecond)))
	}
	var mu sync.Mutex
	seen := map[string]string{}
	var wg sync.WaitGroup
	for i, s := range stores {
		for w := range 3 {
			owner := fmt.Sprintf("store%d-worker%d", i, w)
			wg.Go(func() {
				for {
					got, err := s.Claim(ctx, claim(owner, t0.Add(time.Second), 4))
					if err != nil {
						t.Errorf("Claim: %v", err)
						return
					}
					if len(got) == 0 {
						return
					}
					mu.Lock()
					for _, b := range got {
						if prev, dup := seen[b.Key.BatchID]; dup {
							t.Errorf("batch %s claimed by %s and %s", b.Key.BatchID, prev, owner)
						}
						seen[b.Key.BatchID] = owner
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if len(seen) != batches {
		t.Fatalf("%d batches claimed, want %d", len(seen), batches)
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

func TestSweepAcrossStores(t *testing.T) {
	dsn := pgtest.Schema(t)
	stores := []*postgres.Store{open(t, dsn), open(t, dsn), open(t, dsn)}
	const batches = 150
	for i := range batches {
		b := newBatch("echo", fmt.Sprint("s", i), t0)
		b.ExpiresAt = t0.Add(time.Duration(i) * time.Millisecond)
		mustCreate(t, stores[0], b)
	}
	mustCreate(t, stores[0], newBatch("echo", "live", t0))
	var mu sync.Mutex
	total := 0
	var wg sync.WaitGroup
	for _, s := range stores {
		for range 2 {
			wg.Go(func() {
				for {
					n, err := s.Sweep(ctx, t0.Add(time.Hour), 7)
					if err != nil {
						t.Errorf("Sweep: %v", err)
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
		t.Fatalf("concurrent sweeps deleted %d, want %d", total, batches)
	}
	if _, err := stores[1].Get(ctx, asyncfn.Key{Function: "echo", BatchID: "live"}, t0.Add(time.Hour), false); err != nil {
		t.Fatalf("the live batch after the sweeps: %v", err)
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

// listener collects the events of one Listen.
type listener struct {
	mu     sync.Mutex
	events []asyncfn.Event
	more   chan struct{}
	done   chan error
	cancel context.CancelFunc
}

func listen(t *testing.T, s *postgres.Store) *listener {
	lctx, cancel := context.WithCancel(ctx)
	l := &listener{more: make(chan struct{}, 1), done: make(chan error, 1), cancel: cancel}
	go func() { l.done <- s.Listen(lctx, l.add) }()
	t.Cleanup(func() {
		cancel()
		<-l.done
	})
	return l
}

func (l *listener) add(e asyncfn.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
	select {
	case l.more <- struct{}{}:
	default:
	}
}

// reset forgets the events received so far.
func (l *listener) reset() {
	l.mu.Lock()
	l.events = nil
	l.mu.Unlock()
}

// await waits up to d for an event that matches, among all those received so far.
func (l *listener) await(d time.Duration, match func(asyncfn.Event) bool) bool {
	timeout := time.After(d)
	for {
		l.mu.Lock()
		for _, e := range l.events {
			if match(e) {
				l.mu.Unlock()
				return true
			}
		}
		l.mu.Unlock()
		select {
		case <-l.more:
		case <-timeout:
			return false
		}
	}
}

func (l *listener) mustAwait(t *testing.T, want asyncfn.Event) {
	t.Helper()
	if !l.await(10*time.Second, func(e asyncfn.Event) bool { return e == want }) {
		l.mu.Lock()
		defer l.mu.Unlock()
		t.Fatalf("no event %+v; received %+v", want, l.events)
	}
}

// ready waits until l listens, creating batches with s until l hears of one: Listen has
// no other way to tell that its LISTEN is in place.
func (l *listener) ready(t *testing.T, s asyncfn.Store) {
	t.Helper()
	for i := range 100 {
		mustCreate(t, s, newBatch("probe", fmt.Sprint(time.Now().UnixNano(), "-", i), t0))
		if l.await(100*time.Millisecond, func(e asyncfn.Event) bool { return e.Key.Function == "probe" }) {
			return
		}
	}
	t.Fatal("Listen heard nothing")
}

func TestListen(t *testing.T) {
	dsn := pgtest.Schema(t)
	a, b := open(t, dsn), open(t, dsn)
	l := listen(t, a)
	l.ready(t, b)

	key := asyncfn.Key{Function: "echo", BatchID: `odd "id"/ü`}
	mustCreate(t, b, newBatch(key.Function, key.BatchID, t0))
	l.mustAwait(t, asyncfn.Event{Key: key, State: asyncfn.Queued})

	if _, err := b.ClaimKey(ctx, key, claim("w", t0, 1)); err != nil {
		t.Fatal(err)
	}
	retry := asyncfn.FinishParams{Now: t0, Error: &asyncfn.Error{Kind: asyncfn.Retryable, Message: "busy"}, Retry: true, RunAfter: t0}
	l.reset()
	if err := b.Finish(ctx, key, "w", retry); err != nil {
		t.Fatal(err)
	}
	l.mustAwait(t, asyncfn.Event{Key: key, State: asyncfn.Queued})

	if _, err := b.ClaimKey(ctx, key, claim("w", t0, 1)); err != nil {
		t.Fatal(err)
	}
	if err := b.Finish(ctx, key, "w", asyncfn.FinishParams{Now: t0, Result: []byte(`{"data":[[0,1]]}`)}); err != nil {
		t.Fatal(err)
	}
	l.mustAwait(t, asyncfn.Event{Key: key, State: asyncfn.Succeeded})

	failed := asyncfn.Key{Function: "echo", BatchID: "failed"}
	mustCreate(t, b, newBatch(failed.Function, failed.BatchID, t0))
	if _, err := b.ClaimKey(ctx, failed, claim("w", t0, 1)); err != nil {
		t.Fatal(err)
	}
	if err := b.Finish(ctx, failed, "w", asyncfn.FinishParams{Now: t0, Error: &asyncfn.Error{Kind: asyncfn.InvalidInput, Message: "no."}}); err != nil {
		t.Fatal(err)
	}
	l.mustAwait(t, asyncfn.Event{Key: failed, State: asyncfn.Failed})

	// A worker that died on its last attempt: the claim that finds it fails it.
	abandoned := newBatch("echo", "abandoned", t0)
	abandoned.MaxAttempts = 1
	mustCreate(t, b, abandoned)
	if _, err := b.ClaimKey(ctx, abandoned.Key, claim("dies", t0, 1)); err != nil {
		t.Fatal(err)
	}
	p := claim("w", t0.Add(time.Hour), 10)
	p.Functions = []string{"echo"}
	if got, err := b.Claim(ctx, p); err != nil || len(got) != 0 {
		t.Fatalf("Claim = %d batches, %v; want none", len(got), err)
	}
	l.mustAwait(t, asyncfn.Event{Key: abandoned.Key, State: asyncfn.Failed})

	// The listener's own store's changes too.
	own := asyncfn.Key{Function: "echo", BatchID: "own"}
	mustCreate(t, a, newBatch(own.Function, own.BatchID, t0))
	l.mustAwait(t, asyncfn.Event{Key: own, State: asyncfn.Queued})

	// A key too long for a NOTIFY payload: an event without a key.
	mustCreate(t, b, newBatch("echo", strings.Repeat("long", 2000), t0))
	l.mustAwait(t, asyncfn.Event{State: asyncfn.Queued})
}

func TestListenSchemasApart(t *testing.T) {
	a, b := open(t, pgtest.Schema(t)), open(t, pgtest.Schema(t))
	la, lb := listen(t, a), listen(t, b)
	la.ready(t, a)
	lb.ready(t, b)
	mustCreate(t, b, newBatch("echo", "in-b", t0))
	lb.mustAwait(t, asyncfn.Event{Key: asyncfn.Key{Function: "echo", BatchID: "in-b"}, State: asyncfn.Queued})
	// Events of one transaction arrive in order, so by now la would have had it.
	mustCreate(t, a, newBatch("echo", "in-a", t0))
	la.mustAwait(t, asyncfn.Event{Key: asyncfn.Key{Function: "echo", BatchID: "in-a"}, State: asyncfn.Queued})
	if la.await(0, func(e asyncfn.Event) bool { return e.Key.BatchID == "in-b" }) {
		t.Fatal("a store heard the events of another schema")
	}
}

func TestListenTerminated(t *testing.T) {
	dsn := pgtest.Schema(t)
	appName := "asyncfn_test_" + schemaOf(t, dsn)
	s := open(t, pgtest.Param(dsn, "application_name", appName))
	l := listen(t, s)
	l.ready(t, s)
	if n := terminate(t, connect(t, dsn), appName, "LISTEN %"); n != 1 {
		t.Fatalf("%d listening connections terminated, want 1", n)
	}
	select {
	case err := <-l.done:
		if !errors.Is(err, asyncfn.ErrUnavailable) {
			t.Fatalf("Listen on a terminated connection returned %v, want ErrUnavailable", err)
		}
		l.done <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Listen did not return when its connection was terminated")
	}
	// The caller listens again.
	again := listen(t, s)
	again.ready(t, s)
}

func TestListenStops(t *testing.T) {
	s := open(t, pgtest.Schema(t))
	l := listen(t, s)
	l.ready(t, s)
	l.cancel()
	if err := <-l.done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Listen after its context was cancelled: %v, want context.Canceled", err)
	}
	l.done <- nil

	l = listen(t, s)
	l.ready(t, s)
	s.Close()
	select {
	case err := <-l.done:
		if !errors.Is(err, asyncfn.ErrClosed) {
			t.Fatalf("Listen after Close: %v, want ErrClosed", err)
		}
		l.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end Listen")
	}
	if err := s.Listen(ctx, func(asyncfn.Event) {}); !errors.Is(err, asyncfn.ErrClosed) {
		t.Fatalf("Listen on a closed store: %v, want ErrClosed", err)
	}
}

func TestSurvivesOutage(t *testing.T) {
	dsn := pgtest.Schema(t)
	p, proxied := pgtest.StartProxy(t, dsn)
	s := open(t, proxied)
	key := asyncfn.Key{Function: "echo", BatchID: "before"}
	mustCreate(t, s, newBatch(key.Function, key.BatchID, t0))

	p.Down()
	for i := range 3 {
		if _, err := s.Get(ctx, key, t0, false); !errors.Is(err, asyncfn.ErrUnavailable) {
			t.Fatalf("Get %d during the outage: %v, want ErrUnavailable", i, err)
		} else {
			t.Logf("Get %d during the outage: %v", i, err)
		}
	}
	if err := s.Listen(ctx, func(asyncfn.Event) {}); !errors.Is(err, asyncfn.ErrUnavailable) {
		t.Fatalf("Listen during the outage: %v, want ErrUnavailable", err)
	}

	if err := p.Up(); err != nil {
		t.Fatal(err)
	}
	ok := 0
	for i := 0; ok < 3; i++ {
		if i == 20 {
			t.Fatalf("no recovery after %d calls", i)
		}
		if _, err := s.Get(ctx, key, t0, false); err == nil {
			ok++
		} else if !errors.Is(err, asyncfn.ErrUnavailable) {
			t.Fatalf("Get after the outage: %v, want ErrUnavailable or success", err)
		}
	}
	l := listen(t, s)
	l.ready(t, s)
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
