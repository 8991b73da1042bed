package cli_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn/postgres/pgtest"
)

// Row-mode runs in these tests: 2,000 rows at 400 requests per second (5 s a batch), 8 in
// flight, saved every 100 rows or 500 ms.
const (
	rowModeRows        = 2000
	rowModeConcurrency = 8
	rowModeCheckpoint  = 100
)

// countingAPI is a local API called once per row, {"text": ARG} in and {"label": ...}
// out, that counts its calls.
type countingAPI struct {
	mu    sync.Mutex
	calls int
	seen  chan struct{} // gets a value at each call past notifyAt
	at    int
}

func newCountingAPI(t *testing.T, notifyAt int) (*countingAPI, string) {
	api := &countingAPI{seen: make(chan struct{}, 1), at: notifyAt}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return api, srv.URL
}

func (a *countingAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var in struct{ Text string }
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.calls++
	if a.calls >= a.at {
		select {
		case a.seen <- struct{}{}:
		default:
		}
	}
	a.mu.Unlock()
	json.NewEncoder(w).Encode(map[string]string{"label": "label of " + in.Text})
}

func (a *countingAPI) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls
}

// rowModeFile declares the function label, calling url once per row.
func rowModeFile(t *testing.T, url string) string {
	return writeFile(t, fmt.Sprintf(`functions:
  - name: label
    checkpoint: {rows: %d, interval: 500ms}
    http:
      mode: row
      url: %s/label
      body: '{"text": {{json (arg 0)}}}'
      result: label
      concurrency: %d
      rate: 400
`, rowModeCheckpoint, url, rowModeConcurrency))
}

// rowModeBatch returns the rows of a batch and its expected answer.
func rowModeBatch() (body []byte, want string) {
	args := make([]any, rowModeRows)
	labels := make([]any, rowModeRows)
	for i := range args {
		args[i] = fmt.Sprintf("text %d", i)
		labels[i] = fmt.Sprintf("label of text %d", i)
	}
	return rows(args...), echoed(labels...)
}

// interruptRowMode starts the binary with args, POSTs a 2,000-row batch, waits until
// the API has answered 800 of its rows, lets interrupt stop the process, starts args2
// (args if nil), and returns the answer and the API's calls in all.
func interruptRowMode(t *testing.T, args []string, interrupt func(cmd *exec.Cmd)) (reply, int) {
	t.Helper()
	bin := binary(t)
	api, url := newCountingAPI(t, 800)
	args = append(args, "--config", rowModeFile(t, url), "--sync-wait", "0", "--lease", "1s", "--shutdown-timeout", "5s")
	cmd, s := startBinary(t, bin, args...)
	body, want := rowModeBatch()
	if r := s.post("label", "big", body); r.Status != http.StatusAccepted {
		t.Fatalf("POST = %v, want 202", r)
	}
	select {
	case <-api.seen:
	case <-time.After(60 * time.Second):
		t.Fatalf("the API got %d calls in 60s, want 800", api.count())
	}
	interrupt(cmd)
	_, s = startBinary(t, bin, args...)
	r := s.await("label", "big", http.StatusOK)
	checkOK(t, r, want)
	return r, api.count()
}

// TestRowModeKill9: the real binary is killed in the middle of a 2,000-row row-mode
// batch; after the restart the batch answers its exact rows, and the API was called at
// most 2,000 times plus one checkpoint window (the rows answered since the last save,
// and those in flight at the kill).
func TestRowModeKill9(t *testing.T) {
	t.Parallel()
	store := filepath.Join(t.TempDir(), "a.db")
	_, calls := interruptRowMode(t, []string{"serve", "--addr", "127.0.0.1:0", "--store", store}, func(cmd *exec.Cmd) { kill9(t, cmd) })
	if limit := rowModeRows + rowModeCheckpoint + rowModeConcurrency; calls > limit {
		t.Errorf("the API got %d calls for %d rows, want at most %d: the rows saved before the kill were called again", calls, rowModeRows, limit)
	}
	t.Logf("%d calls for %d rows", calls, rowModeRows)
}

// TestRowModeSIGTERM: a shutdown in the middle of the batch hands it back with every row
// answered saved, so the API is called again only for the requests in flight at the
// shutdown.
func TestRowModeSIGTERM(t *testing.T) {
	t.Parallel()
	store := filepath.Join(t.TempDir(), "a.db")
	_, calls := interruptRowMode(t, []string{"serve", "--addr", "127.0.0.1:0", "--store", store}, func(cmd *exec.Cmd) {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("after SIGTERM: %v, want a clean exit", err)
		}
	})
	if limit := rowModeRows + rowModeConcurrency; calls > limit {
		t.Errorf("the API got %d calls for %d rows, want at most %d: rows answered before the shutdown were called again", calls, rowModeRows, limit)
	}
	t.Logf("%d calls for %d rows", calls, rowModeRows)
}

// TestRowModeLeaseLostPostgres: a process running a row-mode batch on PostgreSQL stalls
// (SIGSTOP, as a frozen VM or a long pause) past its lease; another process takes the
// batch over from its last checkpoint and answers it; the stalled process, resumed, finds
// its lease lost and neither saves nor answers anything. The API was called at most
// 2,000 times plus one checkpoint window.
func TestRowModeLeaseLostPostgres(t *testing.T) {
	t.Parallel()
	dsn := pgtest.Schema(t)
	bin := binary(t)
	api, url := newCountingAPI(t, 800)
	args := []string{"serve", "--addr", "127.0.0.1:0", "--store", dsn, "--config", rowModeFile(t, url), "--sync-wait", "0", "--lease", "1s"}
	stalled, a := startBinary(t, bin, args...)
	body, want := rowModeBatch()
	if r := a.post("label", "big", body); r.Status != http.StatusAccepted {
		t.Fatalf("POST = %v, want 202", r)
	}
	select {
	case <-api.seen:
	case <-time.After(60 * time.Second):
		t.Fatalf("the API got %d calls in 60s, want 800", api.count())
	}
	if err := stalled.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	_, b := startBinary(t, bin, args...)
	checkOK(t, b.await("label", "big", http.StatusOK), want)
	if err := stalled.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // time for the resumed process to find its lease lost
	checkOK(t, b.get("label", "big"), want)
	if limit := rowModeRows + rowModeCheckpoint + rowModeConcurrency; api.count() > limit {
		t.Errorf("the API got %d calls for %d rows, want at most %d", api.count(), rowModeRows, limit)
	}
	t.Logf("%d calls for %d rows", api.count(), rowModeRows)
}
