package cli_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/caller"
)

// benchServer starts `serve` on a SQLite file in a temporary directory with the echo
// function, for benchmarks.
func benchServer(b *testing.B, args ...string) *server {
	b.Helper()
	s, err := runMain(b, append([]string{"serve", "--addr", "127.0.0.1:0", "--store", b.TempDir() + "/bench.db", "--log-level", "warn"}, args...), nil,
		asyncfn.Function{Name: "echo", Func: asyncfn.Echo})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Stop() })
	return s
}

// batchBody returns a request body of n rows of short text.
func batchBody(n int) string {
	var sb strings.Builder
	sb.WriteString(`{"data":[`)
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `[%d,"row %d: the quick brown fox jumps over the lazy dog"]`, i, i)
	}
	sb.WriteString(`]}`)
	return sb.String()
}

var benchBatch atomic.Int64

func send(b *testing.B, client *http.Client, method, url, id, body string) (int, string) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("sf-external-function-query-batch-id", id)
	resp, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(got)
}

// BenchmarkPostAccepted measures the POST-to-202 latency on the SQLite store: the
// request decoded, validated and stored durably, the answer sent.
func BenchmarkPostAccepted(b *testing.B) {
	for _, rows := range []int{1, 4096} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			s := benchServer(b, "--sync-wait", "0", "--max-queued", "1000000")
			body := batchBody(rows)
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			for range b.N {
				id := fmt.Sprint("post-", benchBatch.Add(1))
				if status, got := send(b, s.client, "POST", s.URL+"/echo", id, body); status != http.StatusAccepted {
					b.Fatalf("POST = %d %s", status, got)
				}
			}
		})
	}
}

// BenchmarkCycle measures the whole POST-to-200 cycle of one batch at a time on the
// SQLite store, as Snowflake sees it: POST, then GET until 200 (the default long-poll
// answers the moment the batch is done).
func BenchmarkCycle(b *testing.B) {
	for _, rows := range []int{1, 4096} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			s := benchServer(b, "--sync-wait", "0")
			body := batchBody(rows)
			b.ResetTimer()
			for range b.N {
				id := fmt.Sprint("cycle-", benchBatch.Add(1))
				status, got := send(b, s.client, "POST", s.URL+"/echo", id, body)
				for status == http.StatusAccepted {
					status, got = send(b, s.client, "GET", s.URL+"/echo", id, "")
				}
				if status != http.StatusOK {
					b.Fatalf("batch %s = %d %s", id, status, got)
				}
			}
			b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkAsyncVsSync runs the same Snowflake-like load (4,096-row batches, 16 at once)
// against the service with its defaults and against a plain synchronous echo handler on
// the same machine, in the same run, and reports the ratio of their rows per second: what
// the store, the queue and the workers cost. Goal: at least 0.75 on SQLite. The memory
// store shows what the durable writes cost.
func BenchmarkAsyncVsSync(b *testing.B) {
	for _, store := range []string{"sqlite", "memory"} {
		b.Run("store="+store, func(b *testing.B) {
			var args []string
			if store == "memory" {
				args = []string{"--store", "memory"}
			}
			benchAsyncVsSync(b, benchServer(b, args...))
		})
	}
}

func benchAsyncVsSync(b *testing.B, s *server) {
	baseline, err := caller.StartBaseline()
	if err != nil {
		b.Fatal(err)
	}
	defer baseline.Close()
	compare(b, "baseline", baseline.URL, "service", s.URL+"/echo")
}

// compare runs a Snowflake-like load (4,096-row batches, 16 at once) against two URLs in
// turns, so that both see the same state of the machine, and reports the rows per second
// of each and the ratio of the second's to the first's.
func compare(b *testing.B, name1, url1, name2, url2 string) {
	const rows, concurrency, batches = 4096, 16, 64
	load := func(url string) float64 {
		res, err := caller.Bench(context.Background(), caller.BenchConfig{
			Config:  caller.Config{URL: url, MaxBatchRows: rows, Concurrency: concurrency},
			Batches: batches,
		})
		if err != nil {
			b.Fatal(err)
		}
		if res.Errors > 0 {
			b.Fatalf("%d of %d batches failed against %s: %v", res.Errors, res.Batches, url, res.FirstErrors)
		}
		return res.RowsPerSecond
	}
	var first, second float64
	b.ResetTimer()
	for range b.N {
		first += load(url1)
		second += load(url2)
	}
	b.ReportMetric(second/float64(b.N), name2+"-rows/s")
	b.ReportMetric(first/float64(b.N), name1+"-rows/s")
	b.ReportMetric(second/first, "ratio")
}

// BenchmarkFunctionsFile measures the functions file's kinds under the load of
// BenchmarkAsyncVsSync. http: a local fast upstream (the synchronous echo of
// caller.StartBaseline) called through asyncfn, over the same upstream called directly
// (goal >= 0.9). exec: a Python echo script in a pool of 2, over the built-in echo (its
// cost, reported).
func BenchmarkFunctionsFile(b *testing.B) {
	baseline, err := caller.StartBaseline()
	if err != nil {
		b.Fatal(err)
	}
	defer baseline.Close()
	const script = "import json, sys\nfor line in sys.stdin:\n    print(json.dumps({'data': [[r[0], r[1]] for r in json.loads(line)['data']]}), flush=True)\n"
	file := filepath.Join(b.TempDir(), "functions.yaml")
	text := fmt.Sprintf("functions:\n  - name: upstream\n    http: {url: %q}\n  - name: script\n    exec: {command: [python3, -c, %q], processes: 2}\n", baseline.URL, script)
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
	s := benchServer(b, "--config", file)
	b.Run("kind=http", func(b *testing.B) { compare(b, "direct", baseline.URL, "through", s.URL+"/upstream") })
	b.Run("kind=exec", func(b *testing.B) { compare(b, "builtin", s.URL+"/echo", "exec", s.URL+"/script") })
}
