package cli

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/dynamodb"
	"github.com/asyncfn/asyncfn/memory"
	"github.com/asyncfn/asyncfn/postgres"
	"github.com/asyncfn/asyncfn/sqlite"
)

// storeHelp documents the --store values.
const storeHelp = "where batches are kept: a file path or sqlite:PATH (embedded SQLite, one process), postgres://... (shared by many processes), dynamodb://TABLE?region=R&endpoint=URL, or memory (lost at exit)"

// openStore opens the store a --store value names.
func openStore(ctx context.Context, spec string, logger *slog.Logger) (asyncfn.Store, error) {
	switch {
	case isPostgres(spec):
		return postgres.Open(ctx, spec, postgres.Options{Logger: logger})
	case spec == "memory":
		return memory.New(), nil
	case strings.HasPrefix(spec, "sqlite:"):
		return sqlite.Open(strings.TrimPrefix(spec, "sqlite:"))
	case strings.HasPrefix(spec, "dynamodb://"):
		return dynamodb.Open(ctx, spec)
	case strings.Contains(spec, "://"):
		return nil, fmt.Errorf("--store %q: unknown kind of store; use a file path, sqlite:PATH, postgres://..., dynamodb://TABLE or memory", spec)
	case spec == "":
		return nil, fmt.Errorf("--store is empty; use a file path, sqlite:PATH or memory")
	}
	return sqlite.Open(spec)
}

func isPostgres(spec string) bool {
	return strings.HasPrefix(spec, "postgres://") || strings.HasPrefix(spec, "postgresql://")
}
