// Package sqlite is the default asyncfn.Store: one SQLite file on local disk, through the
// pure-Go driver modernc.org/sqlite (no cgo). It is durable across crashes of the process
// and serves one process: several front ends or workers on one store need PostgreSQL.
//
// The file runs in WAL mode with synchronous=NORMAL: a transaction is durable once
// committed as far as a crash of the process goes (kill -9 loses nothing); only a power
// loss or OS crash can lose the last transactions. All writes go through one connection,
// in order, so writers never wait on SQLite's busy lock; reads use a pool of their own and
// never wait for writes. The writes that arrive while a transaction runs are committed
// together in the next one (package group): a commit writes every page it changed to the
// log, and concurrent batches change the same pages. Statements are prepared once: SQLite
// spends more parsing and planning them than running them.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite" // also registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/internal/group"
)

// Options configure a store.
type Options struct {
	// Logger receives what opening the file did: a schema upgraded, the leases of a
	// previous process expired. Nil: nothing is logged.
	Logger *slog.Logger
}

// Store is an asyncfn.Store in a SQLite file.
type Store struct {
	write  *sql.DB
	conn   *sql.Conn // write's one connection, held: SQLite has one writer at a time anyway
	read   *sql.DB
	group  group.Committer[txn]
	stmts  sync.Map // prepared statements by stmtKey
	lock   *os.File
	keys   keys
	log    *slog.Logger
	closed atomic.Bool
}

var _ asyncfn.Store = (*Store)(nil)

const schema = `
CREATE TABLE IF NOT EXISTS batches (
	function      TEXT    NOT NULL,
	batch_id      TEXT    NOT NULL,
	query_id      TEXT    NOT NULL,
	state         TEXT    NOT NULL,
	digest        TEXT    NOT NULL,
	rows          INTEGER NOT NULL,
	error_kind    TEXT    NOT NULL DEFAULT '',
	error_message TEXT    NOT NULL DEFAULT '',
	attempts      INTEGER NOT NULL DEFAULT 0,
	max_attempts  INTEGER NOT NULL,
	owner         TEXT    NOT NULL DEFAULT '',
	lease_until   INTEGER NOT NULL DEFAULT 0,
	run_after     INTEGER NOT NULL DEFAULT 0,
	created_at    INTEGER NOT NULL,
	started_at    INTEGER NOT NULL DEFAULT 0,
	finished_at   INTEGER NOT NULL DEFAULT 0,
	delivered_at  INTEGER NOT NULL DEFAULT 0,
	expires_at    INTEGER NOT NULL,
	headers       TEXT    NOT NULL DEFAULT '', -- a JSON object, or empty for none
	saved_bytes   INTEGER NOT NULL DEFAULT 0,  -- given to Checkpoint (asyncfn.MaxSavedBytes)
	PRIMARY KEY (function, batch_id)
);
-- Claims and Stats look at few states; the sweeper at expiry times.
CREATE INDEX IF NOT EXISTS batches_state ON batches (state, created_at);
CREATE INDEX IF NOT EXISTS batches_expiry ON batches (expires_at);
-- The status page's overview: batches finished lately, failures newest first.
CREATE INDEX IF NOT EXISTS batches_finished ON batches (state, finished_at);
-- Payloads and results live apart from the row they belong to: SQLite rewrites a whole
-- record on UPDATE, and each state change of a batch would otherwise copy megabytes.
CREATE TABLE IF NOT EXISTS blobs (
	function TEXT NOT NULL,
	batch_id TEXT NOT NULL,
	kind     TEXT NOT NULL, -- payload or result
	data     BLOB NOT NULL,
	PRIMARY KEY (function, batch_id, kind)
);
-- The rows saved by Checkpoint, one record each, so that a checkpoint writes only its own.
CREATE TABLE IF NOT EXISTS saved_rows (
	function TEXT    NOT NULL,
	batch_id TEXT    NOT NULL,
	number   INTEGER NOT NULL,
	value    BLOB    NOT NULL,
	PRIMARY KEY (function, batch_id, number)
);
-- One row that Ping rewrites, to tell that the file takes writes.
CREATE TABLE IF NOT EXISTS probe (
	id  INTEGER PRIMARY KEY,
	at  INTEGER NOT NULL,
	pad BLOB
);
PRAGMA user_version = 3;
`

// upgrades bring a file of an older schema version (the index) to the next one.
var upgrades = []string{
	1: `ALTER TABLE batches ADD COLUMN headers TEXT NOT NULL DEFAULT ''`,
	// schema creates the saved_rows table.
	2: `ALTER TABLE batches ADD COLUMN saved_bytes INTEGER NOT NULL DEFAULT 0`,
}

// Open opens (creating if needed) the store in the file at path. It takes an exclusive
// lock on the file for the life of the process, and expires the leases left by a previous
// process, whose batches are then claimed again at once (their attempts stay counted).
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("sqlite store: %w", err)
		}
	}
	lock, err := lockFile(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: %w", err)
	}
	// A large page cache keeps a batch's payload in memory from its POST to its claim;
	// memory-mapped reads spare a system call per page of a large blob.
	dsn := "file:" + path + "?_pragma=synchronous(NORMAL)&_pragma=busy_timeout(10000)" +
		"&_pragma=cache_size(-65536)&_pragma=mmap_size(1073741824)"
	write, err := sql.Open("sqlite", dsn)
	if err != nil {
		lock.Close()
		return nil, err
	}
	write.SetMaxOpenConns(1)
	// Transactions are BEGIN and COMMIT statements on the held connection rather than
	// sql.Tx, whose statements cannot outlive it: the write statements are prepared once.
	conn, err := write.Conn(ctx)
	if err != nil {
		write.Close()
		lock.Close()
		return nil, fmt.Errorf("sqlite store %s: %w", path, err)
	}
	read, err := sql.Open("sqlite", dsn+"&_pragma=query_only(true)")
	if err != nil {
		conn.Close()
		write.Close()
		lock.Close()
		return nil, err
	}
	read.SetMaxOpenConns(8)
	read.SetMaxIdleConns(8) // not the default 2: a read would open a connection and prepare its statements again
	s := &Store{write: write, conn: conn, read: read, lock: lock, log: log}
	s.group = group.Committer[txn]{
		Begin: func(ctx context.Context) (txn, error) {
			if s.closed.Load() {
				return txn{}, asyncfn.ErrClosed
			}
			_, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`)
			return txn{s}, s.translate(err)
		},
		Commit: func(ctx context.Context, _ txn) error {
			if _, err := conn.ExecContext(ctx, `COMMIT`); err != nil {
				_, _ = conn.ExecContext(ctx, `ROLLBACK`) // a commit that failed may leave the transaction open
				return s.translate(err)
			}
			return nil
		},
		Rollback: func(ctx context.Context, _ txn) {
			_, _ = conn.ExecContext(ctx, `ROLLBACK`) // fails only if SQLite rolled back already
		},
		Clean:  group.Outcome,
		Max:    groupMax,
		Linger: groupLinger,
	}
	// 8 KB pages (for a new file; the page size is fixed once the file is in WAL mode):
	// payloads and results of hundreds of kilobytes go to the WAL a page, a system call
	// and a checksum at a time, while every small update writes a whole page. Measured on
	// 4,096-row and 1-row batches, 8 KB served both best.
	if _, err := conn.ExecContext(ctx, `PRAGMA page_size = 8192; PRAGMA journal_mode = WAL`); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite store %s: %w", path, err)
	}
	var version int
	if err := conn.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil || version > len(upgrades) {
		s.Close()
		return nil, fmt.Errorf("sqlite store %s: not a store of this version of asyncfn (schema version %d, %v)", path, version, err)
	}
	// A damaged file is found now, with its name, rather than by the first batch that
	// touches the damaged page. quick_check reads every page once: about a second per
	// gigabyte.
	if err := quickCheck(ctx, conn); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite store %s is damaged, restore it from a backup or move it away to start empty: %w", path, err)
	}
	for v := max(version, 1); version > 0 && v < len(upgrades); v++ {
		// One transaction, so that a process killed halfway leaves the old version whole.
		if err := s.tx(ctx, func(tx txn) error {
			_, err := tx.ExecContext(ctx, upgrades[v]+fmt.Sprintf("; PRAGMA user_version = %d", v+1))
			return err
		}); err != nil {
			s.Close()
			return nil, fmt.Errorf("sqlite store %s: upgrading the schema to version %d: %w", path, v+1, err)
		}
		log.Info("sqlite: upgraded the schema", "file", path, "version", v+1)
	}
	if _, err := conn.ExecContext(ctx, schema); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite store %s: creating the schema: %w", path, err)
	}
	res, err := conn.ExecContext(ctx, `UPDATE batches SET lease_until = 0 WHERE state = 'running'`)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite store %s: expiring old leases: %w", path, err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		log.Warn("sqlite: batches left running by a previous process will run again", "file", path, "batches", n)
	}
	f, err := s.scanKeys(ctx, nil)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlite store %s: reading the keys stored: %w", path, err)
	}
	s.keys.cur.Store(f)
	return s, nil
}

// quickCheck runs SQLite's quick_check and returns its first findings as an error.
func quickCheck(ctx context.Context, db *sql.Conn) error {
	rows, err := db.QueryContext(ctx, `PRAGMA quick_check(5)`)
	if err != nil {
		return err
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return err
		}
		if line != "ok" {
			problems = append(problems, strings.Join(strings.Fields(line), " "))
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("quick_check: %s", strings.Join(problems, "; "))
	}
	return nil
}

// columns are read by scan in this order.
const columns = `function, batch_id, query_id, state, digest, rows, error_kind, error_message,
	attempts, max_attempts, owner, lease_until, run_after, created_at, started_at, finished_at,
	delivered_at, expires_at, headers`

// scan reads the columns, then the extra destinations (blobs joined in).
func scan(row interface{ Scan(...any) error }, extra ...any) (*asyncfn.Batch, error) {
	var b asyncfn.Batch
	var kind, msg string
	var lease, runAfter, created, started, finished, delivered, expires int64
	var headers string
	dest := []any{&b.Key.Function, &b.Key.BatchID, &b.QueryID, &b.State, &b.Digest, &b.Rows,
		&kind, &msg, &b.Attempts, &b.MaxAttempts, &b.Owner, &lease, &runAfter, &created, &started,
		&finished, &delivered, &expires, &headers}
	dest = append(dest, extra...)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	if headers != "" {
		if err := json.Unmarshal([]byte(headers), &b.Headers); err != nil {
			return nil, fmt.Errorf("the headers of batch %v: %w", b.Key, err)
		}
	}
	if kind != "" {
		b.Error = &asyncfn.Error{Kind: asyncfn.ErrorKind(kind), Message: msg}
	}
	b.LeaseUntil, b.RunAfter, b.CreatedAt = fromNanos(lease), fromNanos(runAfter), fromNanos(created)
	b.StartedAt, b.FinishedAt, b.DeliveredAt, b.ExpiresAt = fromNanos(started), fromNanos(finished), fromNanos(delivered), fromNanos(expires)
	return &b, nil
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func errorColumns(e *asyncfn.Error) (kind, msg string) {
	if e == nil {
		return "", ""
	}
	return string(e.Kind), e.Message
}

// translate turns driver errors into the contract's.
func (s *Store) translate(err error) error {
	switch {
	case err == nil:
		return nil
	case s.closed.Load():
		return asyncfn.ErrClosed
	case errors.Is(err, sql.ErrNoRows):
		return asyncfn.ErrNotFound
	case noWrites(err):
		return fmt.Errorf("%w: sqlite store: %w", asyncfn.ErrNoWrites, err)
	}
	return fmt.Errorf("sqlite store: %w", err)
}

// noWrites reports whether err means that the file cannot take writes now: the disk is
// full, the file or its directory is read-only, the disk fails, or the file is corrupt.
func noWrites(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code() & 0xff { // the primary code, without its extended part
	case sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CORRUPT,
		sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM:
		return true
	}
	return false
}

// groupMax caps the operations committed together: a group of large batches writes
// their payloads and results in one transaction.
const groupMax = 64

// groupLinger is how long a write recording an answer served already waits to be
// committed with others: each commit writes every page it changed, the indexes' too.
const groupLinger = 2 * time.Millisecond

// tx runs fn in a write transaction, perhaps shared with other calls' (see group.Do: fn
// may run again, alone, and returns an outcome sentinel only before it writes).
func (s *Store) tx(ctx context.Context, fn func(tx txn) error) error {
	if s.closed.Load() {
		return asyncfn.ErrClosed
	}
	return s.group.Do(ctx, fn)
}

// txn runs the statements of a write transaction on the held connection, each prepared
// once per store.
type txn struct{ s *Store }

func (t txn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := t.s.prepared(ctx, t.s.conn, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (t txn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := t.s.prepared(ctx, t.s.conn, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// QueryRowContext returns a row whose Scan reports a failure to prepare, as
// sql.DB.QueryRowContext's does.
func (t txn) QueryRowContext(ctx context.Context, query string, args ...any) scanner {
	st, err := t.s.prepared(ctx, t.s.conn, query)
	if err != nil {
		return failedRow{err}
	}
	return st.QueryRowContext(ctx, args...)
}

type scanner interface{ Scan(...any) error }

type failedRow struct{ err error }

func (r failedRow) Scan(...any) error { return r.err }

// stmtKey names a statement prepared on the held connection or the read pool.
type stmtKey struct {
	on    any
	query string
}

// prepared returns query prepared on db, from the cache after the first call. The
// queries are constants or built from a handful of function lists, so the cache stays
// small.
func (s *Store) prepared(ctx context.Context, db interface {
	PrepareContext(context.Context, string) (*sql.Stmt, error)
}, query string) (*sql.Stmt, error) {
	k := stmtKey{db, query}
	if st, ok := s.stmts.Load(k); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := s.stmts.LoadOrStore(k, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

func (s *Store) Create(ctx context.Context, b *asyncfn.Batch) (*asyncfn.Batch, error) {
	kind, msg := errorColumns(b.Error)
	headers := ""
	if len(b.Headers) > 0 {
		j, err := json.Marshal(b.Headers)
		if err != nil {
			return nil, err
		}
		headers = string(j)
	}
	args := []any{b.Key.Function, b.Key.BatchID, b.QueryID, b.State, b.Digest, b.Rows, kind, msg,
		b.Attempts, b.MaxAttempts, b.Owner, nanos(b.LeaseUntil), nanos(b.RunAfter),
		nanos(b.CreatedAt), nanos(b.StartedAt), nanos(b.FinishedAt), nanos(b.DeliveredAt), nanos(b.ExpiresAt), headers}
	var old *asyncfn.Batch
	err := s.tx(ctx, func(tx txn) error {
		old = nil
		s.added(b.Key)
		// Most keys are new: the insert alone decides, and the row is read only when a
		// batch holds the key already.
		res, err := tx.ExecContext(ctx, `INSERT `+insertBatch+` ON CONFLICT (function, batch_id) DO NOTHING`, args...)
		if err != nil {
			return s.translate(err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			var result []byte
			existing, err := scan(tx.QueryRowContext(ctx, `SELECT `+columns+`, `+resultBlob+` FROM batches
				WHERE function = ? AND batch_id = ?`, b.Key.Function, b.Key.BatchID), &result)
			if err != nil {
				return s.translate(err)
			}
			if existing.ExpiresAt.After(b.CreatedAt) {
				old = existing
				old.Result = result
				if existing.Digest == b.Digest {
					return asyncfn.ErrDuplicate
				}
				return asyncfn.ErrConflict
			}
			// A re-created expired key keeps nothing of the old batch: neither its result
			// nor its payload, which would otherwise stand in for a payload still to come,
			// nor its saved rows.
			if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE `+insertBatch, args...); err != nil {
				return s.translate(err)
			}
			if err := s.deleteBlobs(ctx, tx, b.Key); err != nil {
				return err
			}
		}
		if b.State == asyncfn.Succeeded { // stored as its first attempt left it (see Store.Create)
			if err := s.putBlob(ctx, tx, b.Key, "result", b.Result); err != nil {
				return err
			}
		}
		if b.Payload == nil { // created claimed, its payload to come, or finished
			return nil
		}
		return s.putBlob(ctx, tx, b.Key, "payload", b.Payload)
	})
	return old, err
}

// insertBatch is the insert of Create, after INSERT or INSERT OR REPLACE.
const insertBatch = `INTO batches (function, batch_id, query_id, state, digest, rows, error_kind,
	error_message, attempts, max_attempts, owner, lease_until, run_after, created_at, started_at,
	finished_at, delivered_at, expires_at, headers) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

func (s *Store) Get(ctx context.Context, key asyncfn.Key, now time.Time, withPayload bool) (*asyncfn.Batch, error) {
	if s.closed.Load() {
		return nil, asyncfn.ErrClosed
	}
	if !s.mayHold(key) {
		return nil, asyncfn.ErrNotFound
	}
	var result, payload []byte
	payloadCol := "NULL"
	if withPayload {
		payloadCol = payloadBlob
	}
	get, err := s.prepared(ctx, s.read, `SELECT `+columns+`, `+resultBlob+`, `+payloadCol+` FROM batches
		WHERE function = ? AND batch_id = ? AND expires_at > ?`)
	if err != nil {
		return nil, s.translate(err)
	}
	b, err := scan(get.QueryRowContext(ctx, key.Function, key.BatchID, nanos(now)), &result, &payload)
	if err != nil {
		return nil, s.translate(err)
	}
	b.Result, b.Payload = result, payload
	if withPayload {
		if b.Saved, err = s.saved(ctx, s.read, key); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// querier is a connection pool or a transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// saved reads the rows saved for key, in row order; nil if none.
func (s *Store) saved(ctx context.Context, q querier, key asyncfn.Key) ([]asyncfn.SavedRow, error) {
	rows, err := q.QueryContext(ctx, `SELECT number, value FROM saved_rows WHERE function = ? AND batch_id = ? ORDER BY number`,
		key.Function, key.BatchID)
	if err != nil {
		return nil, s.translate(err)
	}
	defer rows.Close()
	var out []asyncfn.SavedRow
	for rows.Next() {
		var r asyncfn.SavedRow
		if err := rows.Scan(&r.Number, &r.Value); err != nil {
			return nil, s.translate(err)
		}
		out = append(out, r)
	}
	return out, s.translate(rows.Err())
}

// deleteBlobs deletes the payload, result and saved rows of key.
func (s *Store) deleteBlobs(ctx context.Context, tx txn, key asyncfn.Key) error {
	for _, table := range []string{"blobs", "saved_rows"} {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE function = ? AND batch_id = ?`, key.Function, key.BatchID); err != nil {
			return s.translate(err)
		}
	}
	return nil
}

// failAbandoned fails the running batches matching where (with args) whose lease expired
// at now with no attempts left.
func (s *Store) failAbandoned(ctx context.Context, tx txn, now time.Time, where string, args ...any) error {
	rows, err := tx.QueryContext(ctx, `SELECT function, batch_id, attempts FROM batches
		WHERE state = 'running' AND lease_until < ? AND attempts >= max_attempts AND expires_at > ? AND `+hasPayload+` AND `+where,
		append([]any{nanos(now), nanos(now)}, args...)...)
	if err != nil {
		return s.translate(err)
	}
	type abandoned struct {
		key      asyncfn.Key
		attempts int
	}
	var found []abandoned
	for rows.Next() {
		var a abandoned
		if err := rows.Scan(&a.key.Function, &a.key.BatchID, &a.attempts); err != nil {
			rows.Close()
			return s.translate(err)
		}
		found = append(found, a)
	}
	if err := rows.Close(); err != nil {
		return s.translate(err)
	}
	for _, a := range found {
		e := asyncfn.AbandonedError(a.attempts)
		if _, err := tx.ExecContext(ctx, `UPDATE batches SET state = 'failed', error_kind = ?, error_message = ?,
			owner = '', lease_until = 0, finished_at = ? WHERE function = ? AND batch_id = ?`,
			e.Kind, e.Message, nanos(now), a.key.Function, a.key.BatchID); err != nil {
			return s.translate(err)
		}
	}
	return nil
}

func (s *Store) SavePayload(ctx context.Context, key asyncfn.Key, now time.Time, payload []byte) error {
	return s.tx(ctx, func(tx txn) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM batches WHERE function = ? AND batch_id = ? AND expires_at > ?`,
			key.Function, key.BatchID, nanos(now)).Scan(&n); err != nil {
			return s.translate(err)
		}
		if n == 0 {
			return asyncfn.ErrNotFound
		}
		_, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO blobs (function, batch_id, kind, data) VALUES (?, ?, 'payload', ?)`,
			key.Function, key.BatchID, payload)
		return s.translate(err)
	})
}

// resultBlob and payloadBlob select a batch's blobs in a query on batches.
const (
	resultBlob  = `(SELECT data FROM blobs WHERE blobs.function = batches.function AND blobs.batch_id = batches.batch_id AND blobs.kind = 'result')`
	payloadBlob = `(SELECT data FROM blobs WHERE blobs.function = batches.function AND blobs.batch_id = batches.batch_id AND blobs.kind = 'payload')`
)

// putBlob stores a payload or result of key.
func (s *Store) putBlob(ctx context.Context, tx txn, key asyncfn.Key, kind string, data []byte) error {
	if data == nil {
		data = []byte{}
	}
	_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO blobs (function, batch_id, kind, data) VALUES (?, ?, ?, ?)`,
		key.Function, key.BatchID, kind, data)
	return s.translate(err)
}

// claimable is the condition on a claimable batch; its arguments are now, now, now.
const claimable = `expires_at > ? AND ((state = 'queued' AND run_after <= ?)
	OR (state = 'running' AND lease_until < ? AND attempts < max_attempts)) AND ` + hasPayload

// hasPayload is true of a batch whose payload is stored (see Store.Create).
const hasPayload = `EXISTS (SELECT 1 FROM blobs WHERE blobs.function = batches.function
	AND blobs.batch_id = batches.batch_id AND blobs.kind = 'payload')`

// lease claims the batches matching where (with args) up to limit, oldest first.
func (s *Store) lease(ctx context.Context, tx txn, p asyncfn.ClaimParams, where string, args ...any) ([]*asyncfn.Batch, error) {
	now := nanos(p.Now)
	rows, err := tx.QueryContext(ctx, `UPDATE batches SET state = 'running', owner = ?, lease_until = ?,
		started_at = ?, attempts = attempts + 1
		WHERE rowid IN (SELECT rowid FROM batches WHERE `+claimable+` AND `+where+`
			ORDER BY created_at LIMIT ?)
		RETURNING `+columns+`, `+payloadBlob,
		append(append([]any{p.Owner, nanos(p.Now.Add(p.Lease)), now, now, now, now}, args...), p.Limit)...)
	if err != nil {
		return nil, s.translate(err)
	}
	defer rows.Close()
	var out []*asyncfn.Batch
	for rows.Next() {
		var payload []byte
		b, err := scan(rows, &payload)
		if err != nil {
			return nil, s.translate(err)
		}
		b.Payload = payload
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, s.translate(err)
	}
	rows.Close()
	for _, b := range out {
		if b.Saved, err = s.saved(ctx, tx, b.Key); err != nil {
			return nil, err
		}
	}
	// RETURNING does not keep the subquery's order.
	slices.SortStableFunc(out, func(a, b *asyncfn.Batch) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

func functionsFilter(fns []string) (string, []any) {
	if len(fns) == 0 {
		return "1 = 1", nil
	}
	args := make([]any, len(fns))
	for i, f := range fns {
		args[i] = f
	}
	return "function IN (?" + strings.Repeat(", ?", len(fns)-1) + ")", args
}

func (s *Store) Claim(ctx context.Context, p asyncfn.ClaimParams) ([]*asyncfn.Batch, error) {
	var out []*asyncfn.Batch
	where, args := functionsFilter(p.Functions)
	err := s.tx(ctx, func(tx txn) error {
		if err := s.failAbandoned(ctx, tx, p.Now, where, args...); err != nil {
			return err
		}
		var err error
		out, err = s.lease(ctx, tx, p, where, args...)
		return err
	})
	if err != nil {
		return nil, err // not committed: the leases read inside the transaction are not held
	}
	return out, nil
}

func (s *Store) ClaimKey(ctx context.Context, key asyncfn.Key, p asyncfn.ClaimParams) (*asyncfn.Batch, error) {
	var out *asyncfn.Batch
	var notClaimable error // returned after the commit, which keeps an abandoned batch's failure
	err := s.tx(ctx, func(tx txn) error {
		where, args := "function = ? AND batch_id = ?", []any{key.Function, key.BatchID}
		if err := s.failAbandoned(ctx, tx, p.Now, where, args...); err != nil {
			return err
		}
		p.Limit = 1
		got, err := s.lease(ctx, tx, p, where, args...)
		if err != nil {
			return err
		}
		if len(got) == 1 {
			out = got[0]
			return nil
		}
		var n int
		err = tx.QueryRowContext(ctx, `SELECT count(*) FROM batches WHERE function = ? AND batch_id = ? AND expires_at > ?`,
			key.Function, key.BatchID, nanos(p.Now)).Scan(&n)
		switch {
		case err != nil:
			return s.translate(err)
		case n == 0:
			notClaimable = asyncfn.ErrNotFound
		default:
			notClaimable = asyncfn.ErrNotClaimable
		}
		return nil
	})
	if err != nil {
		return nil, err // not committed: the lease is not held
	}
	return out, notClaimable
}

func (s *Store) Extend(ctx context.Context, key asyncfn.Key, owner string, until time.Time) error {
	return s.tx(ctx, func(tx txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE batches SET lease_until = ?
			WHERE function = ? AND batch_id = ? AND state = 'running' AND owner = ?`,
			nanos(until), key.Function, key.BatchID, owner)
		return s.affectedOne(res, err)
	})
}

// affectedOne maps an update of a leased row that changed nothing to ErrLeaseLost.
func (s *Store) affectedOne(res sql.Result, err error) error {
	if err != nil {
		return s.translate(err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return s.translate(err)
	} else if n == 0 {
		return asyncfn.ErrLeaseLost
	}
	return nil
}

func (s *Store) Finish(ctx context.Context, key asyncfn.Key, owner string, p asyncfn.FinishParams) error {
	return s.tx(ctx, func(tx txn) error {
		var savedBytes int
		b, err := scan(tx.QueryRowContext(ctx, `SELECT `+columns+`, saved_bytes FROM batches
			WHERE function = ? AND batch_id = ? AND state = 'running' AND owner = ?`, key.Function, key.BatchID, owner), &savedBytes)
		if errors.Is(err, sql.ErrNoRows) {
			return asyncfn.ErrLeaseLost
		} else if err != nil {
			return s.translate(err)
		}
		next := asyncfn.Finished(b, p)
		kind, msg := errorColumns(next.Error)
		if _, err = tx.ExecContext(ctx, `UPDATE batches SET state = ?, error_kind = ?, error_message = ?,
			attempts = ?, owner = '', lease_until = 0, run_after = ?, finished_at = ?, delivered_at = ?, expires_at = ?
			WHERE function = ? AND batch_id = ?`,
			next.State, kind, msg, next.Attempts, nanos(next.RunAfter), nanos(next.FinishedAt),
			nanos(next.DeliveredAt), nanos(next.ExpiresAt), key.Function, key.BatchID); err != nil {
			return s.translate(err)
		}
		if !next.State.Done() {
			return nil // the saved rows stay for the next attempt
		}
		if savedBytes > 0 { // none saved, none to delete: most batches
			if _, err := tx.ExecContext(ctx, `DELETE FROM saved_rows WHERE function = ? AND batch_id = ?`, key.Function, key.BatchID); err != nil {
				return s.translate(err)
			}
		}
		if next.State != asyncfn.Succeeded {
			return nil
		}
		return s.putBlob(ctx, tx, key, "result", next.Result)
	})
}

// Checkpoint counts the bytes given on the batch's record, conditional on the lease and
// the limit, then adds the rows not saved yet.
func (s *Store) Checkpoint(ctx context.Context, key asyncfn.Key, owner string, now time.Time, rows []asyncfn.SavedRow) error {
	n := asyncfn.SavedBytes(rows)
	return s.tx(ctx, func(tx txn) error {
		const held = `function = ? AND batch_id = ? AND state = 'running' AND owner = ? AND expires_at > ?`
		args := []any{key.Function, key.BatchID, owner, nanos(now)}
		res, err := tx.ExecContext(ctx, `UPDATE batches SET saved_bytes = saved_bytes + ? WHERE `+held+` AND saved_bytes + ? <= ?`,
			append(append([]any{n}, args...), n, asyncfn.MaxSavedBytes)...)
		if err := s.affectedOne(res, err); errors.Is(err, asyncfn.ErrLeaseLost) {
			var holds int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM batches WHERE `+held, args...).Scan(&holds); err != nil {
				return s.translate(err)
			}
			if holds > 0 {
				return asyncfn.ErrCheckpointTooLarge
			}
			return asyncfn.ErrLeaseLost
		} else if err != nil {
			return err
		}
		for _, r := range rows {
			if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO saved_rows (function, batch_id, number, value) VALUES (?, ?, ?, ?)`,
				key.Function, key.BatchID, r.Number, append([]byte{}, r.Value...)); err != nil { // never NULL
				return s.translate(err)
			}
		}
		return nil
	})
}

func (s *Store) MarkDelivered(ctx context.Context, key asyncfn.Key, now, expiresAt time.Time) error {
	return s.tx(ctx, func(tx txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE batches SET delivered_at = ?, expires_at = min(expires_at, ?)
			WHERE function = ? AND batch_id = ? AND expires_at > ? AND state IN ('succeeded', 'failed') AND delivered_at = 0`,
			nanos(now), nanos(expiresAt), key.Function, key.BatchID, nanos(now))
		if err != nil {
			return s.translate(err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return nil
		}
		var exists int
		err = tx.QueryRowContext(ctx, `SELECT count(*) FROM batches WHERE function = ? AND batch_id = ? AND expires_at > ?`,
			key.Function, key.BatchID, nanos(now)).Scan(&exists)
		if err == nil && exists == 0 {
			return asyncfn.ErrNotFound
		}
		return s.translate(err)
	})
}

func (s *Store) Sweep(ctx context.Context, now time.Time, limit int) (int, error) {
	var n int
	err := s.tx(ctx, func(tx txn) error {
		rows, err := tx.QueryContext(ctx, `DELETE FROM batches WHERE rowid IN
			(SELECT rowid FROM batches WHERE expires_at <= ? LIMIT ?) RETURNING function, batch_id`, nanos(now), limit)
		if err != nil {
			return s.translate(err)
		}
		var keys []asyncfn.Key
		for rows.Next() {
			var k asyncfn.Key
			if err := rows.Scan(&k.Function, &k.BatchID); err != nil {
				rows.Close()
				return s.translate(err)
			}
			keys = append(keys, k)
		}
		if err := rows.Close(); err != nil {
			return s.translate(err)
		}
		for _, k := range keys {
			if err := s.deleteBlobs(ctx, tx, k); err != nil {
				return err
			}
		}
		n = len(keys)
		return nil
	})
	return n, err
}

func (s *Store) Stats(ctx context.Context, now time.Time) (asyncfn.Stats, error) {
	var st asyncfn.Stats
	if s.closed.Load() {
		return st, asyncfn.ErrClosed
	}
	rows, err := s.read.QueryContext(ctx, `SELECT state, count(*) FROM batches WHERE expires_at > ? GROUP BY state`, nanos(now))
	if err != nil {
		return st, s.translate(err)
	}
	defer rows.Close()
	for rows.Next() {
		var state asyncfn.State
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			return st, s.translate(err)
		}
		st.Add(state, n)
	}
	return st, s.translate(rows.Err())
}

// CountQueued counts along the batches_state index, reading no finished batch.
func (s *Store) CountQueued(ctx context.Context, now time.Time) (int, error) {
	if s.closed.Load() {
		return 0, asyncfn.ErrClosed
	}
	var n int
	err := s.read.QueryRowContext(ctx, `SELECT count(*) FROM batches WHERE state = 'queued' AND expires_at > ?`, nanos(now)).Scan(&n)
	return n, s.translate(err)
}

// Ping writes a small row: a full disk or a read-only file still answers reads, and only
// a write tells that batches can be stored.
func (s *Store) Ping(ctx context.Context) error {
	return s.tx(ctx, func(tx txn) error {
		_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO probe (id, at, pad) VALUES (1, ?, zeroblob(?))`,
			time.Now().UnixNano(), probeBytes)
		return s.translate(err)
	})
}

// probeBytes is the size of Ping's write: a few pages, as a small batch takes.
const probeBytes = 16 << 10

// Close closes the database and releases the file lock.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.stopKeys()
	s.stmts.Range(func(_, st any) bool {
		st.(*sql.Stmt).Close()
		return true
	})
	err := errors.Join(s.read.Close(), s.conn.Close(), s.write.Close())
	s.lock.Close()
	return err
}
