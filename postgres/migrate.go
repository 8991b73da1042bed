package postgres

import (
	"context"
	"embed"
	"fmt"
	"hash/fnv"
	"log/slog"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// migrationFiles are the schema's migrations, NNNN_name.sql, applied in the order of their
// numbers, each once, inside the binary so that a deployment cannot miss one.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrations reads the embedded migrations in order.
func migrations() ([]migration, error) {
	entries, err := migrationFiles.ReadDir("migrations")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, e := range entries {
		prefix, _, _ := strings.Cut(e.Name(), "_")
		version, err := strconv.Atoi(prefix)
		if err != nil {
			return nil, fmt.Errorf("postgres: migration %s is not named NNNN_name.sql", e.Name())
		}
		sql, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: version, name: e.Name(), sql: string(sql)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	return ms, nil
}

// beginner is a pool or a single connection.
type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// migrate brings schema up to date in one transaction. Processes starting together
// serialize on a transaction-level advisory lock keyed on the schema, so exactly one of
// them applies each migration and the others find it recorded in schema_migrations; the
// lock goes with the transaction, even if the process dies.
func migrate(ctx context.Context, db beginner, schema string, log *slog.Logger) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return translate(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey(schema)); err != nil {
		return translate(err)
	}
	// CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege on the database even when the
	// schema exists: look first, so that a role that may only use its schema can start.
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", schema).Scan(&exists); err != nil {
		return translate(err)
	}
	ident := pgx.Identifier{schema}.Sanitize()
	if !exists {
		if _, err := tx.Exec(ctx, "CREATE SCHEMA "+ident); err != nil {
			return translate(err)
		}
	}
	if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+ident); err != nil {
		return translate(err)
	}
	// Likewise: an up-to-date schema is opened without a write, so that a store opened on
	// a server that is read-only now still opens, and answers 503 until it takes writes.
	var tracked bool
	if err := tx.QueryRow(ctx, "SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&tracked); err != nil {
		return translate(err)
	}
	if !tracked {
		if _, err := tx.Exec(ctx, `CREATE TABLE schema_migrations (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return translate(err)
		}
	}
	rows, err := tx.Query(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return translate(err)
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return translate(err)
	}
	for _, m := range ms {
		if slices.Contains(applied, m.version) {
			continue
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return translate(fmt.Errorf("migration %s: %w", m.name, err))
		}
		if _, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
			return translate(err)
		}
		log.Info("postgres: applied migration", "schema", schema, "migration", m.name)
	}
	return translate(tx.Commit(ctx))
}

// lockKey is the advisory lock of schema's migrations: a hash, since advisory locks take
// numbers, salted so as not to collide with the application's own locks on small numbers.
func lockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("asyncfn migrate " + schema))
	return int64(h.Sum64())
}
