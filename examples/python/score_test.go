// Package score_test runs score.py, the example of an exec function, through asyncfn's
// process pool, directly and behind a runtime and its HTTP front end.
package score_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	asyncfnhttp "github.com/asyncfn/asyncfn/http"
	"github.com/asyncfn/asyncfn/memory"
	"github.com/asyncfn/asyncfn/process"
)

var discard = slog.New(slog.DiscardHandler)

// texts and their scores: (positive - negative words) / words, NULL without words.
const (
	request = `{"data":[[0,"a great and happy day"],[1,"bad, slow and broken"],[2,null],[3,"..."],[4,"good bad"]]}`
	answer  = `{"data":[[0,0.4],[1,-0.75],[2,null],[3,null],[4,0.0]]}`
)

// newPool starts score.py; it is closed at cleanup.
func newPool(t *testing.T) *process.Pool {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed; this test runs score.py")
	}
	cfg := process.DefaultConfig()
	cfg.Name, cfg.Command = "score", []string{"python3", "score.py"}
	pool, err := process.New(context.Background(), cfg, discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pool.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return pool
}

func TestScore(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	rows, err := asyncfn.ParseRows([]byte(request))
	if err != nil {
		t.Fatal(err)
	}
	values, err := pool.Call(context.Background(), rows)
	if err != nil {
		t.Fatal(err)
	}
	body, err := asyncfn.EncodeResult(rows, values)
	if err != nil {
		t.Fatal(err)
	}
	if string(body) != answer {
		t.Errorf("answer %s, want %s", body, answer)
	}
}

// TestScoreServed: a batch POSTed to a runtime serving the pool's function is answered
// with the script's scores.
func TestScoreServed(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	reg, err := asyncfn.NewRegistry(pool.Function())
	if err != nil {
		t.Fatal(err)
	}
	cfg := asyncfn.DefaultRuntimeConfig()
	cfg.Workers = 1
	cfg.Service.SyncWait, cfg.Service.PollWait = 0, 0 // queued, then polled
	rt, err := asyncfn.NewRuntime(memory.New(), reg, discard, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rt.Start(t.Context())
	t.Cleanup(rt.Stop) // before the pool closes: cleanups run last first
	srv := httptest.NewServer(asyncfnhttp.NewHandler(rt.Service(), discard, asyncfnhttp.Config{}))
	t.Cleanup(srv.Close)

	do := func(method, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+"/score", strings.NewReader(body))
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
	if status, body := do(http.MethodPost, request); status != http.StatusAccepted {
		t.Fatalf("POST: %d %s", status, body)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		status, body := do(http.MethodGet, "")
		if status == http.StatusOK {
			if body != answer {
				t.Errorf("answer %s, want %s", body, answer)
			}
			return
		}
		if status != http.StatusAccepted || time.Now().After(deadline) {
			t.Fatalf("GET: %d %s", status, body)
		}
	}
}
