package chaos_test

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn/caller"
	"github.com/asyncfn/asyncfn/postgres/pgtest"
)

// Load of the throughput benchmark: Snowflake's largest batches of the echo function, as
// many in flight as a warehouse sends.
const (
	benchRows        = 4096
	benchConcurrency = 16
	benchBatches     = 96
)

// BenchmarkScaleOut measures rows per second through the real binary under one caller load
// (4,096-row batches of echo, 16 at once, 96 per round) on three deployments, measured in
// the same run, each round interleaving them:
//
//   - sqlite: one `serve` process with its own workers on the embedded SQLite store;
//   - pg: the same, one `serve` process with its own workers, on PostgreSQL;
//   - pg1: a front end (`serve --workers 0`) and one `worker` process on PostgreSQL;
//   - pg2: a front end and two `worker` processes on PostgreSQL.
//
// It reports rows/s for each and the ratios PostgreSQL/SQLite (goal: pg/sqlite >= 0.7:
// the store alone; the split deployments also pay for handing every batch between
// processes, which a process running its own batches at once avoids).
//
//	ASYNCFN_TEST_POSTGRES=postgres://... go test -run XXX -bench ScaleOut -benchtime 3x ./chaos/
func BenchmarkScaleOut(b *testing.B) {
	pgtest.DSN(b) // skip (or fail under CI) before starting anything
	// sync: the defaults, a POST waits up to 1 s and most batches are answered on it;
	// async: --sync-wait 0, every batch is answered on a (held) GET poll.
	b.Run("sync", func(b *testing.B) { benchScaleOut(b) })
	b.Run("async", func(b *testing.B) { benchScaleOut(b, "--sync-wait", "0") })
}

func benchScaleOut(b *testing.B, frontFlags ...string) {
	dir := b.TempDir()
	common := []string{"--log-level", "warn"}
	serve := func(store string, flags ...string) []string {
		args := append([]string{"serve", "--addr", "127.0.0.1:0", "--store", store}, common...)
		return append(append(args, frontFlags...), flags...)
	}
	sqlite := mustStart(b, "sqlite", serve(filepath.Join(dir, "bench.db"))...)

	postgres := func(name string, workers int) *proc {
		dsn := pgtest.Param(pgtest.Schema(b), "application_name", "asyncfn_bench_"+name)
		front := mustStart(b, name+" front end", serve(dsn, "--workers", "0")...)
		for range workers {
			mustStart(b, name+" worker", append([]string{"worker", "--store", dsn}, common...)...)
		}
		return front
	}
	targets := []struct {
		name string
		p    *proc
	}{
		{"sqlite", sqlite},
		{"pg", mustStart(b, "pg", serve(pgtest.Param(pgtest.Schema(b), "application_name", "asyncfn_bench_pg"))...)},
		{"pg1", postgres("pg1", 1)},
		{"pg2", postgres("pg2", 2)},
	}
	rows := caller.SyntheticRows(benchRows)
	run := func(p *proc, batches int) caller.BenchResult {
		b.Helper()
		url := "http://" + p.addr + "/echo"
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		res, err := caller.Bench(ctx, caller.BenchConfig{
			Config:  caller.Config{URL: url, MaxBatchRows: benchRows, Concurrency: benchConcurrency},
			Batches: batches,
			Rows:    rows,
		})
		if err != nil {
			// Stuck: the goroutines of the process that did not answer.
			p.cmd.Process.Signal(syscall.SIGQUIT)
			<-p.exited
			b.Fatalf("%s (%s): %v; its goroutines:\n%s", url, p.name, err, tail(p.stderr.String(), 256<<10))
		}
		if res.Errors > 0 {
			b.Fatalf("%s: %d of %d batches failed: %v", url, res.Errors, res.Batches, res.FirstErrors)
		}
		return res
	}
	for _, tg := range targets { // warm up: connections, prepared statements, caches
		run(tg.p, benchConcurrency)
	}

	total := map[string]struct {
		rows int64
		secs float64
	}{}
	for b.Loop() {
		for _, tg := range targets {
			res := run(tg.p, benchBatches)
			t := total[tg.name]
			t.rows += res.Rows
			t.secs += res.Elapsed.Seconds()
			total[tg.name] = t
			b.Logf("%-6s %8.0f rows/s  batch p50 %v p99 %v, %.2f polls per batch", tg.name, res.RowsPerSecond,
				res.Batch.P50.Round(time.Millisecond), res.Batch.P99.Round(time.Millisecond), res.PollsPerBatch)
		}
	}
	rate := func(name string) float64 { return float64(total[name].rows) / total[name].secs }
	for _, tg := range targets {
		b.ReportMetric(rate(tg.name), tg.name+"_rows/s")
	}
	b.ReportMetric(rate("pg")/rate("sqlite"), "pg/sqlite")
	b.ReportMetric(rate("pg1")/rate("sqlite"), "pg1/sqlite")
	b.ReportMetric(rate("pg2")/rate("sqlite"), "pg2/sqlite")
}
