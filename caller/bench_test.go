package caller

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
)

func benchConfig(url string) BenchConfig {
	cfg := fastConfig(url)
	cfg.MaxBatchRows, cfg.Concurrency = 10, 2
	return BenchConfig{Config: cfg, Batches: 5}
}

func TestBenchBaseline(t *testing.T) {
	t.Parallel()
	server, err := StartBaseline()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := server.Close(); err != nil {
			t.Error(err)
		}
	}()
	cfg := benchConfig(server.URL)
	cfg.Compression = CompressionGzip
	result, err := Bench(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := result.Summary
	if s.Batches != 5 || s.Rows != 50 || s.Errors != 0 || s.Polls != 0 || s.POST.Count != 5 || s.Batch.Count != 5 || s.RowsPerSecond <= 0 {
		t.Errorf("summary %+v", s)
	}
	if result.URL != server.URL || result.RowsPerBatch != 10 || result.Concurrency != 2 {
		t.Errorf("result %+v", result)
	}
	line, err := json.Marshal(result)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"rows_per_second":`, `"batch_latency":{"count":5,"p50_ms":`, `"url":"http://127.0.0.1:`, `"elapsed_seconds":`} {
		if !bytes.Contains(line, []byte(field)) {
			t.Errorf("JSON %s lacks %s", line, field)
		}
	}
	if report := result.Report(); !strings.Contains(report, "rows          50 in") || !strings.Contains(report, "5 POST, 0 GET") {
		t.Errorf("report\n%s", report)
	}
}

// asyncEcho answers each POST 202 and its first GET with the echo.
func asyncEcho() http.Handler {
	var mu sync.Mutex
	results := map[string][]byte{}
	baseline := BaselineHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(asyncfn.HeaderBatchID)
		if r.Method == http.MethodPost {
			rec := httptest.NewRecorder()
			baseline.ServeHTTP(rec, r)
			mu.Lock()
			results[id] = rec.Body.Bytes()
			mu.Unlock()
			w.WriteHeader(http.StatusAccepted)
			return
		}
		mu.Lock()
		body, ok := results[id]
		mu.Unlock()
		if !ok {
			http.Error(w, "unknown batch", http.StatusNotFound)
			return
		}
		w.Write(body)
	})
}

func TestBenchAsyncWithInput(t *testing.T) {
	t.Parallel()
	server := httptest.NewServer(asyncEcho())
	defer server.Close()
	cfg := benchConfig(server.URL)
	cfg.Rows = make([]Row, 25) // batches of 10, 10 and 5, sent in turn
	for i := range cfg.Rows {
		cfg.Rows[i] = Row{json.RawMessage(`{"n":1}`), TextValue("second")}
	}
	cfg.Batches = 3
	result, err := Bench(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s := result.Summary; s.Rows != 25 || s.Errors != 0 || s.Polls != 3 || s.PollsPerBatch != 1 || s.GET.Count != 3 {
		t.Errorf("summary %+v", s)
	}
}

func TestBenchCountsErrors(t *testing.T) {
	t.Parallel()
	server := httptest.NewServer(status(http.StatusBadRequest, "no"))
	defer server.Close()
	result, err := Bench(context.Background(), benchConfig(server.URL))
	if err != nil {
		t.Fatal(err)
	}
	if s := result.Summary; s.Batches != 5 || s.Errors != 5 || s.Rows != 0 || s.Batch.Count != 0 {
		t.Errorf("summary %+v", s)
	}
	if len(result.FirstErrors) != 1 || !strings.Contains(result.FirstErrors[0], "remote service error: 400 'no'") {
		t.Errorf("first errors %q, want the one message once", result.FirstErrors)
	}
}

func TestBenchDuration(t *testing.T) {
	t.Parallel()
	server, err := StartBaseline()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	cfg := benchConfig(server.URL)
	cfg.Batches, cfg.Duration = 0, 1 // stops after the batches already started
	result, err := Bench(context.Background(), cfg)
	if err != nil || result.Errors != 0 {
		t.Errorf("result %+v, error %v", result, err)
	}
}

func TestBenchConfigErrors(t *testing.T) {
	t.Parallel()
	for _, cfg := range []BenchConfig{
		{Config: Config{URL: "http://127.0.0.1:1/x"}},
		{Config: Config{URL: "http://127.0.0.1:1/x"}, Batches: -1},
		{Config: Config{URL: "http://127.0.0.1:1/x"}, Batches: 1, Rows: []Row{}},
		{Config: Config{URL: "nope"}, Batches: 1},
	} {
		if _, err := Bench(context.Background(), cfg); err == nil {
			t.Errorf("Bench(%+v) accepted", cfg)
		}
	}
}

func TestBaselineHandler(t *testing.T) {
	t.Parallel()
	server := httptest.NewServer(BaselineHandler())
	defer server.Close()

	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	io.WriteString(w, `{"data":[[0,"a",1],[1,{"k":[1,2]}],[2,null]]}`)
	w.Close()
	req, _ := http.NewRequest(http.MethodPost, server.URL, &gz)
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `{"data":[[0,"a"],[1,{"k":[1,2]}],[2,null]]}` {
		t.Errorf("%d %s", resp.StatusCode, body)
	}

	resp, err = http.Post(server.URL, "application/json", strings.NewReader(`{"rows":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"data"`) {
		t.Errorf("bad body: %d %s", resp.StatusCode, body)
	}

	resp, err = http.Get(server.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
}

func TestSyntheticRows(t *testing.T) {
	t.Parallel()
	rows := SyntheticRows(20)
	seen := map[string]bool{}
	for _, r := range rows {
		if len(r) != 1 || !json.Valid(r[0]) || seen[string(r[0])] {
			t.Fatalf("row %s", r)
		}
		seen[string(r[0])] = true
	}
}

func TestPercentiles(t *testing.T) {
	t.Parallel()
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i))
	}
	p := PercentilesOf(d)
	if p.Count != 100 || p.P50 != 50 || p.P90 != 90 || p.P99 != 99 || p.Max != 100 {
		t.Errorf("%+v", p)
	}
	if p := PercentilesOf([]time.Duration{7}); p.P50 != 7 || p.P99 != 7 || p.Max != 7 {
		t.Errorf("%+v", p)
	}
	if p := PercentilesOf(nil); p.Count != 0 || !strings.Contains(p.String(), "-") {
		t.Errorf("%+v %s", p, p)
	}
}
