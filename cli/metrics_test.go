package cli_test

import (
	"context"
	"strings"
	"testing"

	"github.com/asyncfn/asyncfn"
)

// TestMetricsMove: each metric moves when its event happens, read from /metrics before
// and after.
func TestMetricsMove(t *testing.T) {
	release := make(chan struct{})
	fns := []asyncfn.Function{
		{Name: "echo", Func: asyncfn.Echo},
		{Name: "reject", Func: asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
			return nil, asyncfn.InvalidInputf("no rows are welcome here.")
		})},
		{Name: "slow", Func: asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
			<-release
			return make([]any, len(rows)), nil
		})},
	}
	s := opsStart(t, []string{"--sync-wait", "5s", "--max-body-bytes", "200"}, nil, fns...)
	before := s.scrape()

	if r := s.post("echo", "m1", `[[0,"a"],[1,"b"]]`); r.Status != 200 {
		t.Fatalf("POST: %d %s", r.Status, r.Body)
	}
	if r := s.post("echo", "m1", `[[0,"a"],[1,"b"]]`); r.Status != 200 {
		t.Fatalf("retried POST: %d %s", r.Status, r.Body)
	}
	if r := s.post("echo", "m1", `[[0,"other"]]`); r.Status != 409 {
		t.Fatalf("conflicting POST: %d %s", r.Status, r.Body)
	}
	if r := s.do("POST", "/echo", `{"data":[[0,1]]}`); r.Status != 400 {
		t.Fatalf("POST without a batch id: %d %s", r.Status, r.Body)
	}
	if r := s.post("echo", "m2", `[[0,"`+strings.Repeat("x", 300)+`"]]`); r.Status != 413 {
		t.Fatalf("POST of a large body: %d %s", r.Status, r.Body)
	}
	if r := s.post("no-such-function", "m3", `[[0,1]]`); r.Status != 404 {
		t.Fatalf("POST to an unknown route: %d %s", r.Status, r.Body)
	}
	if r := s.post("reject", "m4", `[[0,1]]`); r.Status != 400 {
		t.Fatalf("POST to a function that rejects its rows: %d %s", r.Status, r.Body)
	}
	slow := make(chan opsReply, 1)
	go func() { slow <- s.post("slow", "m5", `[[0,1],[1,2],[2,3]]`) }()
	opsEventually(t, "asyncfn_running_batches{function=slow} to be 1", func() bool {
		return s.scrape().value("asyncfn_running_batches", "function", "slow") == 1
	})
	close(release)
	if r := <-slow; r.Status != 200 {
		t.Fatalf("POST to the slow function: %d %s", r.Status, r.Body)
	}
	after := s.scrape()

	for _, c := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{"asyncfn_batches_accepted_total", []string{"function", "echo"}, 1},
		{"asyncfn_batches_duplicate_total", []string{"function", "echo"}, 1},
		{"asyncfn_rows_accepted_total", []string{"function", "echo"}, 2},
		{"asyncfn_batches_rejected_total", []string{"function", "echo", "reason", "conflict"}, 1},
		{"asyncfn_batches_rejected_total", []string{"function", "echo", "reason", "bad_request"}, 1},
		{"asyncfn_batches_rejected_total", []string{"function", "echo", "reason", "too_large"}, 1},
		{"asyncfn_batches_rejected_total", []string{"function", "unknown", "reason", "unknown_function"}, 1},
		{"asyncfn_batches_succeeded_total", []string{"function", "echo"}, 1},
		{"asyncfn_batches_succeeded_total", []string{"function", "slow"}, 1},
		{"asyncfn_rows_processed_total", []string{"function", "echo"}, 2},
		{"asyncfn_rows_processed_total", []string{"function", "slow"}, 3},
		{"asyncfn_batches_failed_total", []string{"function", "reject", "kind", "invalid_input"}, 1},
		{"asyncfn_batch_attempts_total", []string{"function", "reject", "outcome", "failed"}, 1},
		{"asyncfn_running_batches", []string{"function", "slow"}, 0},
		{"asyncfn_accept_duration_seconds", []string{"function", "echo"}, 2}, // the new batch and its retry
		{"asyncfn_queue_wait_seconds", []string{"function", "echo"}, 1},
		{"asyncfn_function_duration_seconds", []string{"function", "slow"}, 1},
		{"asyncfn_batch_duration_seconds", []string{"function", "reject"}, 1},
		{"asyncfn_http_responses_total", []string{"method", "POST", "code", "409"}, 1},
		{"asyncfn_http_responses_total", []string{"method", "POST", "code", "413"}, 1},
		{"asyncfn_http_responses_total", []string{"method", "POST", "code", "200"}, 3},
	} {
		got := after.value(c.name, c.labels...) - before.value(c.name, c.labels...)
		if got != c.delta {
			t.Errorf("%s%v moved by %g, want %g", c.name, c.labels, got, c.delta)
		}
	}
	if got := after.value("asyncfn_store_up"); got != 1 {
		t.Errorf("asyncfn_store_up = %g, want 1", got)
	}
	// A batch answered on its POST is recorded just after its answer goes out: on a
	// store of this process alone, created then, once for each of the three new batches;
	// the retried and the conflicting POSTs read the store.
	opsEventually(t, "asyncfn_store_batches{state=succeeded} to be 2", func() bool {
		return s.scrape().value("asyncfn_store_batches", "state", "succeeded") == 2
	})
	opsEventually(t, "3 more store creates", func() bool {
		return s.scrape().value("asyncfn_store_operation_duration_seconds", "operation", "create")-before.value("asyncfn_store_operation_duration_seconds", "operation", "create") == 3
	})
	if got := after.value("asyncfn_store_errors_total", "operation", "create"); got != 0 {
		t.Errorf("asyncfn_store_errors_total{operation=create} = %g: a duplicate or conflict is not a store error", got)
	}
	if after["go_goroutines"] == nil || after["process_cpu_seconds_total"] == nil {
		t.Errorf("the Go and process collectors are missing")
	}
}

// TestMetricsOverload: a 429 is counted as sent and as a rejection, and the queue depth
// gauge reads the store.
func TestMetricsOverload(t *testing.T) {
	s := opsStart(t, []string{"--workers", "0", "--max-queued", "1", "--sync-wait", "0"}, nil)
	if r := s.post("echo", "q1", `[[0,1]]`); r.Status != 202 {
		t.Fatalf("POST: %d %s", r.Status, r.Body)
	}
	if r := s.post("echo", "q2", `[[0,1]]`); r.Status != 429 {
		t.Fatalf("POST past --max-queued: %d %s", r.Status, r.Body)
	}
	m := s.scrape()
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"asyncfn_http_too_many_requests_total", nil, 1},
		{"asyncfn_http_responses_total", []string{"method", "POST", "code", "429"}, 1},
		{"asyncfn_batches_rejected_total", []string{"function", "echo", "reason", "overloaded"}, 1},
		{"asyncfn_queued_batches", nil, 1},
		{"asyncfn_store_batches", []string{"state", "queued"}, 1},
		{"asyncfn_store_batches", []string{"state", "running"}, 0},
	} {
		if got := m.value(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %g, want %g", c.name, c.labels, got, c.want)
		}
	}
}

// TestMetricsAddr: --metrics-addr moves /metrics to its own listener, protected by the
// same keys.
func TestMetricsAddr(t *testing.T) {
	s := opsStart(t, []string{"--metrics-addr", "127.0.0.1:0", "--api-key", authKey1}, nil)
	if r := s.do("GET", s.URL+"/metrics", "", "Authorization", "Bearer "+authKey1); r.Status != 404 {
		t.Errorf("GET /metrics on --addr: %d, want 404 (it moved to --metrics-addr)", r.Status)
	}
	if r := s.do("GET", s.MetricsURL+"/metrics", ""); r.Status != 401 {
		t.Errorf("GET /metrics on --metrics-addr without a key: %d, want 401", r.Status)
	}
	s.post("echo", "x1", `[[0,1]]`, "sf-custom-api-key", authKey1)
	m := s.scrape("Authorization", "Bearer "+authKey1)
	if got := m.value("asyncfn_batches_accepted_total", "function", "echo"); got != 1 {
		t.Errorf("asyncfn_batches_accepted_total on --metrics-addr = %g, want 1", got)
	}
}
