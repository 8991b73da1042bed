package cli_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/storetest"
)

// The end-to-end tests of the correctness issue's defects, over real HTTP against the
// real command (in process, or the binary where a process must be killed).

// TestDiskFullRunsNothingTwice (defect 1): the real binary on a nearly full disk. Batches
// it cannot store are answered 503; those it stored are never run while their claims
// cannot be committed, the workers back off instead of spinning, and once the disk has
// room each is answered with its own rows, run about once. Before the fix one batch ran
// 12,653 times in 20 s.
func TestDiskFullRunsNothingTwice(t *testing.T) {
	dir, resize := storetest.SmallDisk(t, 8<<20)
	_, s := startBinary(t, binary(t), "serve", "--addr", "127.0.0.1:0", "--store", filepath.Join(dir, "a.db"),
		"--workers", "2", "--lease", "3s", "--sync-wait", "0", "--poll-wait", "0", "--log-level", "warn")
	accepted := map[string]string{}
	for i := range 16 {
		id := fmt.Sprint("big-", i)
		value := fmt.Sprintf("%02d %s", i, strings.Repeat("x", 500<<10))
		r := s.post("echo", id, rows(value))
		switch r.Status {
		case http.StatusAccepted, http.StatusOK:
			accepted[id] = echoed(value)
		case http.StatusServiceUnavailable:
			checkOneSentence(t, r)
			if !strings.Contains(r.Body, "cannot take writes") || r.Header.Get("Retry-After") == "" {
				t.Errorf("POST on a full disk = %v (Retry-After %q), want 503 saying the store takes no writes, with Retry-After", r, r.Header.Get("Retry-After"))
			}
		default:
			t.Fatalf("POST %s on a filling disk = %v, want 202, 200 or 503", id, r)
		}
	}
	if len(accepted) == 16 {
		t.Fatal("every batch was stored: the disk never filled")
	}
	time.Sleep(4 * time.Second) // more than a lease: a hot loop would have run thousands of times
	resize(64 << 20)
	for id, want := range accepted {
		if r := s.await("echo", id, http.StatusOK); r.Body != want {
			t.Errorf("batch %s answered %d bytes, want its own %d", id, len(r.Body), len(want))
		}
	}
	attempts := metric(t, s, `asyncfn_batch_attempts_total{function="echo",outcome="succeeded"}`)
	if attempts != float64(len(accepted)) {
		t.Errorf("%v successful attempts for %d batches, want one each", attempts, len(accepted))
	}
	if all := metricSum(t, s, "asyncfn_batch_attempts_total"); all > float64(3*len(accepted)) {
		t.Errorf("%v attempts in all for %d batches; want a few at most", all, len(accepted))
	}
}

// metric returns the value of one series on the server's /metrics.
func metric(t *testing.T, s *server, series string) float64 {
	t.Helper()
	body := s.do(http.MethodGet, "/metrics", nil).Body
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return 0
}

// metricSum adds up every series of a metric on the server's /metrics.
func metricSum(t *testing.T, s *server, name string) float64 {
	t.Helper()
	sum := 0.0
	re := regexp.MustCompile(`^` + name + `(\{[^}]*\})? (\S+)$`)
	for _, line := range strings.Split(s.do(http.MethodGet, "/metrics", nil).Body, "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			sum += v
		}
	}
	return sum
}

// TestRecreatedBatchAnswersItsOwnRows (defect 2), the reproduction as written: a batch id
// whose batch expired is sent again with other rows, acknowledged 202, and the process is
// killed before it answers. After the restart the batch answers its new rows, never the
// expired batch's.
func TestRecreatedBatchAnswersItsOwnRows(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	store := filepath.Join(t.TempDir(), "a.db")
	const retention = 2 * time.Second
	common := []string{"serve", "--addr", "127.0.0.1:0", "--store", store, "--retention", retention.String(), "--sweep-interval", "1h"}

	cmd, s := startBinary(t, bin, append(common, "--sync-wait", "0")...)
	created := time.Now()
	if r := s.post("echo", "X", rows("AAA")); r.Status != http.StatusAccepted {
		t.Fatalf("first POST = %v", r)
	}
	checkOK(t, s.await("echo", "X", http.StatusOK), echoed("AAA"))
	kill9(t, cmd)

	cmd, s = startBinary(t, bin, append(common, "--sync-wait", "1s", "--rate-limit", "echo=1:1")...)
	time.Sleep(time.Until(created.Add(retention + 100*time.Millisecond)))
	again := []any{"BBB0", "BBB1", "BBB2", "BBB3", "BBB4"}
	if r := s.post("echo", "X", rows(again...)); r.Status != http.StatusAccepted {
		t.Fatalf("POST of the re-created batch = %v, want 202 (the rate limit makes it slower than the sync budget)", r)
	}
	kill9(t, cmd)

	_, s = startBinary(t, bin, common...)
	checkOK(t, s.await("echo", "X", http.StatusOK), echoed(again...))
}

// TestMetricsBounded (defect 3): neither strangers nor callers with a key can grow the
// number of series with invented methods; refused requests create none at all.
func TestMetricsBounded(t *testing.T) {
	t.Parallel()
	key := "0123456789abcdef0123456789abcdef"
	s := startServer(t, serverConfig{args: []string{"--api-key", key}, fns: []asyncfn.Function{echoFn}})
	sizeBefore := len(s.do(http.MethodGet, "/metrics", nil, "authorization", "Bearer "+key).Body)
	for i := range 300 {
		if r := s.do(fmt.Sprintf("M%d", i), "/echo", nil); r.Status != http.StatusUnauthorized {
			t.Fatalf("keyless request = %v, want 401", r)
		}
		if r := s.do(fmt.Sprintf("K%d", i), "/echo", nil, "authorization", "Bearer "+key); r.Status != http.StatusMethodNotAllowed {
			t.Fatalf("request with an invented method = %v, want 405", r)
		}
	}
	body := s.do(http.MethodGet, "/metrics", nil, "authorization", "Bearer "+key).Body
	if strings.Contains(body, `method="M`) || strings.Contains(body, `method="K`) || strings.Contains(body, `code="401"`) {
		t.Errorf("invented methods or refused requests made series:\n%s", grepLines(body, "asyncfn_http_responses_total"))
	}
	if !strings.Contains(body, `asyncfn_http_responses_total{code="405",method="other"} 300`) {
		t.Errorf("invented methods not counted as other:\n%s", grepLines(body, "asyncfn_http_responses_total"))
	}
	if len(body) > sizeBefore+8<<10 {
		t.Errorf("/metrics grew from %d to %d bytes for 600 requests with invented methods", sizeBefore, len(body))
	}
}

func grepLines(s, prefix string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// heapPeak samples the process's heap every few milliseconds until stop, and returns the
// highest value seen over the one before the sampling started.
func heapPeak() (stop func() uint64) {
	var base runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
	return func() uint64 {
		close(done)
		wg.Wait()
		return max(peak.Load(), base.HeapInuse) - base.HeapInuse
	}
}

// TestClaimedLengthReservesNothing (defect 4): connections that claim a large
// Content-Length and send a few bytes cost a few bytes each, not what they claim. Before
// the fix, 100 such connections took 1.4 GB. Not parallel: it measures the heap.
func TestClaimedLengthReservesNothing(t *testing.T) {
	s := startServer(t, serverConfig{fns: []asyncfn.Function{echoFn}})
	addr := strings.TrimPrefix(s.URL, "http://")
	stop := heapPeak()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 100 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: x\r\nsf-external-function-query-batch-id: slow-%d\r\nContent-Length: %d\r\n\r\n{\"data\":[[0,", i, 16<<20-1)
	}
	time.Sleep(500 * time.Millisecond) // every request read its headers and its first bytes
	if grew := stop(); grew > 64<<20 {
		t.Errorf("the heap grew by %d MB for 100 connections that sent 13 bytes each; want a few MB", grew>>20)
	}
}

// gzipBomb is a gzip body of a few kilobytes that inflates to more than n bytes.
func gzipBomb(t *testing.T, n int) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write([]byte(`{"data":[[0,"`))
	zeros := make([]byte, 1<<20)
	for i := range zeros {
		zeros[i] = 'a'
	}
	for range n >> 20 {
		zw.Write(zeros)
	}
	zw.Write([]byte(`"]]}`))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestBodiesInFlightBounded (defect 5): bodies read at once share a budget of bytes; past
// it a POST is answered 429 with Retry-After (Snowflake retries), never a 5xx, and memory
// stays near the budget. Before the fix 128 gzip bombs took 1.16 GB. Not parallel: it
// measures the heap.
func TestBodiesInFlightBounded(t *testing.T) {
	const budget = 40 << 20
	s := startServer(t, serverConfig{args: []string{"--max-inflight-bytes", strconv.Itoa(budget), "--workers", "0", "--sync-wait", "0"}, fns: []asyncfn.Function{echoFn}})
	bomb := gzipBomb(t, 24<<20)
	stop := heapPeak()
	statuses := make([]int, 64)
	var wg sync.WaitGroup
	for i := range statuses {
		wg.Go(func() {
			r := s.do(http.MethodPost, "/echo", bytes.NewReader(bomb), sfHeaders("echo", fmt.Sprint("bomb-", i), "content-encoding", "gzip")...)
			statuses[i] = r.Status
			if r.Status == http.StatusTooManyRequests && r.Header.Get("Retry-After") == "" {
				t.Errorf("429 without Retry-After")
			}
		})
	}
	wg.Wait()
	grew := stop()
	count := map[int]int{}
	for _, st := range statuses {
		count[st]++
	}
	if count[http.StatusRequestEntityTooLarge]+count[http.StatusTooManyRequests] != len(statuses) {
		t.Errorf("answers to 64 gzip bombs: %v; want only 413 (too large) and 429 (busy reading)", count)
	}
	if grew > 4*budget {
		t.Errorf("the heap grew by %d MB for a budget of %d MB", grew>>20, budget>>20)
	}
	t.Logf("64 gzip bombs of %d KB inflating to 24 MB: %v; heap grew by %d MB (budget %d MB)", len(bomb)>>10, count, grew>>20, budget>>20)

	// Two bodies held open take most of the budget (15 MB each of 40): a third large body
	// is refused with 429, and accepted once they are gone.
	large := rows(strings.Repeat("y", 15<<20))
	// A bomb's handler gives its bytes back just after its answer is sent.
	eventually(t, "a large body accepted once the bombs are answered", func() bool {
		return s.post("echo", "first", large).Status == http.StatusAccepted
	})
	var held []net.Conn
	for i := range 2 {
		c, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: x\r\nsf-external-function-query-batch-id: held-%d\r\nContent-Length: %d\r\n\r\n", i, len(large)+1)
		go c.Write(large) // one byte short: the server waits for it, holding what it read
	}
	time.Sleep(time.Second) // the server has read both: a third body racing them could win the budget instead
	eventually(t, "a 429 while two large bodies are held", func() bool {
		r := s.post("echo", "third", large)
		return r.Status == http.StatusTooManyRequests && strings.Contains(r.Body, "too many request bodies")
	})
	for _, c := range held {
		c.Close()
	}
	eventually(t, "the third body accepted once the others are gone", func() bool {
		return s.post("echo", "third", large).Status == http.StatusAccepted
	})
}

// TestInvalidUTF8 (defect 6): raw bytes that are not UTF-8 are refused with a 400 that
// names the row; nothing is stored.
func TestInvalidUTF8(t *testing.T) {
	t.Parallel()
	s := startServer(t, serverConfig{fns: []asyncfn.Function{echoFn}})
	r := s.post("echo", "bad", []byte("{\"data\":[[0,\"fine\"],[1,\"\xff\xfe\"]]}"))
	checkSentence(t, r)
	if r.Status != http.StatusBadRequest || !strings.Contains(r.Body, "row 1") || !strings.Contains(r.Body, "UTF-8") {
		t.Errorf("POST of invalid UTF-8 = %v, want 400 naming row 1", r)
	}
	if r := s.get("echo", "bad"); r.Status != http.StatusNotFound {
		t.Errorf("GET of the refused batch = %v, want 404", r)
	}
}

// TestDamagedStoreStops (defect 7): a damaged SQLite file stops the command at start with
// a message that names the file and SQLite's finding.
func TestDamagedStoreStops(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "a.db")
	if err := os.WriteFile(path, bytes.Repeat([]byte("not sqlite"), 2000), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := runMain(t, []string{"serve", "--addr", "127.0.0.1:0", "--store", path}, nil)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "not a database") {
		t.Errorf("serve on a damaged file = %v; want an error naming %s and SQLite's finding", err, path)
	}
}

// TestReadyOnFullDisk (defect 7): /readyz fails while the disk is full, saying why, and
// recovers when it has room.
func TestReadyOnFullDisk(t *testing.T) {
	dir, resize := storetest.SmallDisk(t, 2<<20)
	s := startServer(t, serverConfig{store: filepath.Join(dir, "a.db"), args: []string{"--workers", "0", "--sync-wait", "0"}, fns: []asyncfn.Function{echoFn}})
	if r := s.do(http.MethodGet, "/readyz", nil); r.Status != http.StatusOK {
		t.Fatalf("/readyz = %v", r)
	}
	for i := 0; s.post("echo", fmt.Sprint("fill-", i), rows(strings.Repeat("z", 100<<10))).Status == http.StatusAccepted; i++ {
		if i > 100 {
			t.Fatal("the disk never filled")
		}
	}
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	for _, err := f.Write(make([]byte, 4096)); err == nil; _, err = f.Write(make([]byte, 4096)) {
	}
	f.Close()
	eventually(t, "/readyz failing on a full disk", func() bool {
		r := s.do(http.MethodGet, "/readyz", nil)
		return r.Status == http.StatusServiceUnavailable && strings.Contains(r.Body, "cannot take writes")
	})
	os.Remove(filepath.Join(dir, "filler"))
	resize(32 << 20)
	eventually(t, "/readyz answering once the disk has room", func() bool {
		return s.do(http.MethodGet, "/readyz", nil).Status == http.StatusOK
	})
}

// TestNotFoundNamesPath (defect 8): a 404 names the path as requested.
func TestNotFoundNamesPath(t *testing.T) {
	t.Parallel()
	s := startServer(t, serverConfig{fns: []asyncfn.Function{echoFn}})
	for _, path := range []string{"/echo/", "/nosuch", "/a/b"} {
		r := s.do(http.MethodPost, path, strings.NewReader(`{"data":[[0,1]]}`), sfHeaders("echo", "b")...)
		checkSentence(t, r)
		if r.Status != http.StatusNotFound || !strings.HasPrefix(r.Body, "no function is served at "+path+";") {
			t.Errorf("POST %s = %v, want 404 naming %s", path, r, path)
		}
	}
}

// TestTooLargeWhileQueueFull (first-ten-minutes issue): a body over the size limit is
// answered 413 even while the queue is full, since a retry could never succeed; a body
// within it is answered 429.
func TestTooLargeWhileQueueFull(t *testing.T) {
	t.Parallel()
	s := startServer(t, serverConfig{args: []string{"--max-queued", "1", "--workers", "0", "--sync-wait", "0", "--max-body-bytes", "1024"}, fns: []asyncfn.Function{echoFn}})
	if r := s.post("echo", "first", rows("x")); r.Status != http.StatusAccepted {
		t.Fatalf("first POST = %v", r)
	}
	eventually(t, "the queue full", func() bool { return s.post("echo", "probe", rows("y")).Status == http.StatusTooManyRequests })
	r := s.post("echo", "big", rows(strings.Repeat("z", 2048)))
	checkSentence(t, r)
	if r.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("POST of a body over the limit while the queue is full = %v, want 413", r)
	}
}
