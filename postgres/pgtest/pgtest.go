// Package pgtest gives tests a PostgreSQL database to run against: the server named by
// ASYNCFN_TEST_POSTGRES, and a schema of their own in it, so that tests run in parallel
// and leave nothing behind.
package pgtest

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the environment variable holding the test server's DSN.
const EnvDSN = "ASYNCFN_TEST_POSTGRES"

// DSN returns the test server's DSN. Without one the test is skipped, except under CI
// (CI set), where it fails: a CI run must not pass by skipping the PostgreSQL tests.
func DSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(EnvDSN)
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal(EnvDSN + " is not set, and CI requires the PostgreSQL tests: set it to a DSN such as postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
		}
		t.Skip(EnvDSN + " is not set: skipping the PostgreSQL tests (set it to a DSN such as postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	return dsn
}

// Schema creates a schema of a random name, asyncfn_test_..., dropped with everything in
// it when the test ends, and returns the test server's DSN with search_path set to it,
// which postgres.Open takes as the store's schema.
func Schema(t testing.TB) string {
	t.Helper()
	dsn := DSN(t)
	schema := "asyncfn_test_" + strings.ToLower(rand.Text()[:12])
	Exec(t, dsn, "CREATE SCHEMA "+schema)
	t.Cleanup(func() { Exec(t, dsn, "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
	return Param(dsn, "search_path", schema)
}

// Exec runs sql on a connection of its own to dsn, failing the test on error.
func Exec(t testing.TB, dsn, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("pgtest: %s: %v", sql, err)
	}
}

// Param returns dsn, a URL or a keyword/value string, with the connection parameter key
// set to value (application_name, say, to find a test's connections in pg_stat_activity).
func Param(dsn, key, value string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return fmt.Sprintf("%s %s='%s'", dsn, key, strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(value))
}
