package sqlite_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/sqlite"
)

// BenchmarkOverview reads the overview of a store holding 100,000 live batches of 5
// functions, created one every 100 ms: 1,000 queued, 1,000 running, 1,960 failed and the
// rest succeeded, 600 of them in the last minute.
func BenchmarkOverview(b *testing.B) {
	path := filepath.Join(b.TempDir(), "asyncfn.db")
	s, err := sqlite.Open(context.Background(), path, sqlite.Options{}) // creates the schema
	if err != nil {
		b.Fatal(err)
	}
	s.Close()
	now := time.Now()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		b.Fatal(err)
	}
	_, err = db.Exec(`WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < 99999)
		INSERT INTO batches (function, batch_id, query_id, state, digest, rows, error_kind, error_message,
			attempts, max_attempts, created_at, finished_at, expires_at)
		SELECT 'f' || (n % 5), 'b' || n, 'q', s, 'd', 100, CASE s WHEN 'failed' THEN 'internal' ELSE '' END,
			CASE s WHEN 'failed' THEN 'boom' ELSE '' END, 1, 3, c, CASE WHEN s IN ('succeeded', 'failed') THEN c + 1e9 ELSE 0 END, ?
		FROM (SELECT n, ? - (100000 - n) * 100000000 AS c,
			CASE WHEN n % 100 = 0 THEN 'queued' WHEN n % 100 = 1 THEN 'running' WHEN n % 50 = 2 THEN 'failed' ELSE 'succeeded' END AS s
			FROM i)`, now.Add(12*time.Hour).UnixNano(), now.UnixNano())
	db.Close()
	if err != nil {
		b.Fatal(err)
	}
	if s, err = sqlite.Open(context.Background(), path, sqlite.Options{}); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	o, err := s.Overview(ctx, now, asyncfn.OverviewParams{})
	if err != nil {
		b.Fatal(err)
	}
	if t := o.Totals(); t.Queued != 1000 || t.Running != 1000 || t.Succeeded+t.Failed < 500 || len(o.Failures) != asyncfn.DefaultOverviewFailures {
		b.Fatalf("overview of the test data: %+v, %d failures", t, len(o.Failures))
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Overview(ctx, now, asyncfn.OverviewParams{}); err != nil {
			b.Fatal(err)
		}
	}
}
