package process_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	asyncfnhttp "github.com/asyncfn/asyncfn/http"
	"github.com/asyncfn/asyncfn/memory"
)

// TestSQLUserSees: a batch whose process crashes on every attempt is retried until its
// attempts run out, restarting the process each time, then answered 422 with the last
// error.
func TestSQLUserSees(t *testing.T) {
	t.Parallel()
	p, _ := newPool(t, faulty, nil)
	fn := p.Function()
	fn.MaxAttempts, fn.Backoff = 2, 10*time.Millisecond
	reg, err := asyncfn.NewRegistry(fn)
	if err != nil {
		t.Fatal(err)
	}
	cfg := asyncfn.DefaultRuntimeConfig()
	cfg.Workers = 1
	cfg.Service.SyncWait, cfg.Service.PollWait = 0, 0
	cfg.Pool.PollInterval = 10 * time.Millisecond // for the retry after its backoff
	rt, err := asyncfn.NewRuntime(memory.New(), reg, discard, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rt.Start(t.Context())
	t.Cleanup(rt.Stop)
	srv := httptest.NewServer(asyncfnhttp.NewHandler(rt.Service(), discard, asyncfnhttp.Config{}))
	t.Cleanup(srv.Close)

	do := func(method, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+"/faulty", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(asyncfn.HeaderBatchID, "batch-1")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	if status, body := do(http.MethodPost, `{"data":[[0,"a"],[1,"crash"]]}`); status != http.StatusAccepted {
		t.Fatalf("POST: %d %s", status, body)
	}
	status, body := http.StatusAccepted, ""
	for deadline := time.Now().Add(time.Minute); status == http.StatusAccepted; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no answer within a minute")
		}
		status, body = do(http.MethodGet, "")
	}
	if status != http.StatusUnprocessableEntity || !strings.Contains(body, "failed 2 times") || !strings.Contains(body, "exited before answering") {
		t.Errorf("answer %d %s, want a 422 saying the process exited", status, body)
	}
	if got := gather(t, p)[`asyncfn_process_requests_total{function="faulty"}{outcome="exited"}`]; got != 2 {
		t.Errorf("%v batches exited, want 2", got)
	}
}
