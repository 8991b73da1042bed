// Package postgres is an asyncfn.Store on PostgreSQL, for front ends and workers spread over
// many processes and machines. It leans on PostgreSQL's own primitives: INSERT ... ON
// CONFLICT for idempotent creation, SELECT ... FOR UPDATE SKIP LOCKED so that claiming
// workers and sweepers never wait for each other, and LISTEN/NOTIFY to tell every process
// about new and finished batches (Store implements asyncfn.Notifier).
//
// The store keeps its tables in one schema (Options.Schema, else the DSN's search_path,
// else "asyncfn"), which Open creates and migrates. Several stores, or several
// deployments, share a database by using different schemas; they see neither each
// other's batches nor each other's events.
//
// Times are stored as timestamptz, to the microsecond, and every comparison is with a time
// the caller passes in (ClaimParams.Now and the like), never with the server's clock.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/internal/group"
)

// DefaultSchema holds the store's tables when neither Options.Schema nor the DSN names one.
const DefaultSchema = "asyncfn"

// Options tune a store; the zero value is ready to use.
type Options struct {
	// Schema holds the store's tables. Empty: the DSN's search_path if it names a single
	// schema (postgres://host/db?search_path=myapp), else DefaultSchema. A schema name is
	// lowercase letters, digits and underscores, at most 56 bytes (its NOTIFY channel,
	// the name plus "_events", must fit PostgreSQL's 63-byte identifiers).
	Schema string
	// MaxConns caps the connection pool. Zero keeps pgxpool's default: the DSN's
	// pool_max_conns, else the larger of 4 and the number of CPUs. Listen uses a
	// connection of its own, outside the pool.
	MaxConns int32
	// Logger receives the migrations applied and the notifications that could not be
	// read. Nil: nothing is logged.
	Logger *slog.Logger
}

// Store is an asyncfn.Store and asyncfn.Notifier on a PostgreSQL connection pool.
//
// The state changes of batches (every method that writes but Sweep) that arrive while
// those of others are being committed are sent together next, as one batch of statements
// in one implicit transaction (package group): one round trip and one commit for many
// batches' changes. Each commit waits for its write-ahead log to reach the disk, and
// commits that NOTIFY take turns, so this is many times faster than a commit each. Sweep
// runs apart: it deletes many rows at a time and never waits for the others.
type Store struct {
	pool    *pgxpool.Pool
	group   group.Committer[*pgx.Batch]
	listen  *pgx.ConnConfig // for Listen's own connections
	channel string
	q       queries
	ov      overviewQueries
	log     *slog.Logger

	closed atomic.Bool
	// closing is done once Close is called, which ends every Listen.
	closing context.Context
	close   context.CancelFunc
}

var (
	_ asyncfn.Store    = (*Store)(nil)
	_ asyncfn.Notifier = (*Store)(nil)
)

// Open connects to the database at dsn (a URL or keyword/value connection string, as pgx
// reads it), creates the schema if it is missing and applies the migrations it lacks.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	cfg, schema, err := parseConfig(dsn, opts)
	if err != nil {
		return nil, err
	}
	listen := cfg.ConnConfig.Copy()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, translate(err)
	}
	log := logger(opts)
	if err := migrate(ctx, pool, schema, log); err != nil {
		pool.Close()
		return nil, err
	}
	closing, close := context.WithCancel(context.Background())
	s := &Store{
		pool:    pool,
		listen:  listen,
		channel: channelOf(schema),
		q:       newQueries(schema),
		ov:      newOverviewQueries(schema),
		log:     log,
		closing: closing,
		close:   close,
	}
	s.group = group.Committer[*pgx.Batch]{
		Begin: func(context.Context) (*pgx.Batch, error) { return &pgx.Batch{}, nil },
		// The batch's statements run in one implicit transaction, committed at its end.
		Commit:   func(ctx context.Context, b *pgx.Batch) error { return s.err(pool.SendBatch(ctx, b).Close()) },
		Rollback: func(context.Context, *pgx.Batch) {}, // nothing was sent
		Clean:    group.Outcome,
		Max:      groupMax,
		Lanes:    groupLanes,
		Linger:   groupLinger,
	}
	return s, nil
}

// groupMax caps the state changes committed together; groupLanes is how many groups may
// be on their way to the server at once: the server runs one group's statements while
// the last one's commit reaches the disk.
const groupMax, groupLanes = 64, 2

// groupLinger is how long a write recording an answer served already waits to be
// committed with others: a commit costs a round trip and a flush of the log.
const groupLinger = 2 * time.Millisecond

// Migrate creates the schema named by dsn and opts if it is missing and applies the
// migrations it lacks, as Open does, for a deployment step that runs before the service
// starts (asyncfn migrate). It is safe to run from several processes at once.
func Migrate(ctx context.Context, dsn string, opts Options) error {
	cfg, schema, err := parseConfig(dsn, opts)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return translate(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return migrate(ctx, conn, schema, logger(opts))
}

func logger(opts Options) *slog.Logger {
	if opts.Logger != nil {
		return opts.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// schemaName is what a schema may be called: no quoting surprises in SQL text, in LISTEN,
// or in the channel name derived from it.
var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,55}$`)

// parseConfig reads dsn and picks the schema (see Options.Schema).
func parseConfig(dsn string, opts Options) (*pgxpool.Config, string, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, "", fmt.Errorf("postgres: %w", err)
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	schema, from := opts.Schema, "Options.Schema"
	if schema == "" {
		schema, from = strings.TrimSpace(cfg.ConnConfig.RuntimeParams["search_path"]), "the DSN's search_path"
	}
	if schema == "" {
		schema = DefaultSchema
	}
	if !schemaName.MatchString(schema) {
		return nil, "", fmt.Errorf("postgres: %s %q is not a schema name of lowercase letters, digits and underscores, at most 56 bytes", from, schema)
	}
	// The batches table is a queue: every state change leaves a dead row version and
	// its index entries, faster than autovacuum (once a minute at most) clears them. A
	// plain index scan marks the dead entries it meets so that the next one skips them; a
	// bitmap scan, which the planner picks on statistics that lag the churn, does not,
	// and every claim then walks all of the queue's past states (measured: 10 ms per
	// claim of an empty queue after 12,000 batches, against 0.1 ms with index scans).
	// Every query of the store is an index lookup or range, which needs no bitmap.
	cfg.ConnConfig.RuntimeParams["enable_bitmapscan"] = "off"
	return cfg, schema, nil
}

// channelOf is the NOTIFY channel of a schema, so that stores in two schemas never hear
// each other.
func channelOf(schema string) string { return schema + "_events" }

// err translates err after a call on the pool: once the store is closed, whatever the
// pool answered means ErrClosed.
func (s *Store) err(err error) error {
	if err != nil && s.closed.Load() {
		return asyncfn.ErrClosed
	}
	return translate(err)
}

// translate maps a driver error to the contract's: pgx.ErrNoRows to ErrNotFound, and
// anything that says the server cannot be reached or talked to now to an error wrapping
// ErrUnavailable (and its cause, for errors.As): network errors, broken or timed-out
// connections, PostgreSQL's connection exceptions (class 08), shutdowns and startups
// (57P01, 57P02, 57P03) and too many connections (53300). A cancelled context is the
// caller's doing, not the store's: it is returned as it is.
func translate(err error) error {
	var pgErr *pgconn.PgError
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pgx.ErrNoRows):
		return asyncfn.ErrNotFound
	case errors.Is(err, context.Canceled):
		return err
	case errors.As(err, &pgErr):
		// Before ConnectError: a server that refuses the login (a wrong password, say)
		// is reachable, and misconfigured rather than unavailable.
		switch code := pgErr.Code; {
		case strings.HasPrefix(code, "08"), code == "57P01", code == "57P02", code == "57P03", code == "53300":
			return unavailable(err)
		case noWrites[code]:
			return fmt.Errorf("%w: postgres: %w", asyncfn.ErrNoWrites, err)
		}
	case errors.As(err, &connectErr), errors.As(err, &netErr), pgconn.SafeToRetry(err), pgconn.Timeout(err),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, context.DeadlineExceeded):
		return unavailable(err)
	}
	return fmt.Errorf("postgres: %w", err)
}

func unavailable(err error) error { return fmt.Errorf("%w: %w", asyncfn.ErrUnavailable, err) }

// noWrites are the SQLSTATEs that mean the server is there but cannot take writes now: a
// full disk (53100), a read-only transaction (25006: a standby after a failover, or
// default_transaction_read_only), an I/O error (58030), corrupt data or index (XX001,
// XX002).
var noWrites = map[string]bool{"53100": true, "25006": true, "58030": true, "XX001": true, "XX002": true}

// Ping reports whether the database answers and takes writes: a standby, or a session
// made read-only, answers every read and refuses every batch.
func (s *Store) Ping(ctx context.Context) error {
	var writable bool
	err := s.pool.QueryRow(ctx, `SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'`).Scan(&writable)
	if err != nil {
		return s.err(err)
	}
	if !writable {
		return fmt.Errorf("%w: postgres: the server is read-only (a standby, or default_transaction_read_only)", asyncfn.ErrNoWrites)
	}
	return nil
}

// Close ends every Listen and closes the pool, waiting for the calls in flight.
func (s *Store) Close() error {
	s.closed.Store(true)
	s.close()
	s.pool.Close()
	return nil
}
