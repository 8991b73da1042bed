package cli_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
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

// startRowMode starts the binary bin with args and a functions file of label, POSTs a
// 2,000-row batch, and returns once the API has answered 800 of its rows.
func startRowMode(t *testing.T, bin string, args []string) (cmd *exec.Cmd, api *countingAPI, fullArgs []string, want string) {
	t.Helper()
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
	return cmd, api, args, want
}

// interruptRowMode starts the row-mode batch (startRowMode), lets interrupt stop the
// process, starts it again, and returns the batch's answer and the API's calls in all.
func interruptRowMode(t *testing.T, args []string, interrupt func(cmd *exec.Cmd)) (reply, int) {
	t.Helper()
	bin := binary(t)
	cmd, api, args, want := startRowMode(t, bin, args)
	interrupt(cmd)
	_, s := startBinary(t, bin, args...)
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
// its lease run out and stops at once, saving and answering nothing. The API was called
// at most 2,000 times plus two windows (a checkpoint and the requests in flight): the rows
// the stalled process answered but had not saved, and the requests it could start as it
// resumed, before its heartbeat ran and saw the lease run out.
func TestRowModeLeaseLostPostgres(t *testing.T) {
	t.Parallel()
	dsn := pgtest.Schema(t)
	bin := binary(t)
	stalled, api, args, want := startRowMode(t, bin, []string{"serve", "--addr", "127.0.0.1:0", "--store", dsn})
	if err := stalled.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	_, b := startBinary(t, bin, args...)
	checkOK(t, b.await("label", "big", http.StatusOK), want)
	before := api.count()
	if err := stalled.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // time for the resumed process to find its lease lost
	checkOK(t, b.get("label", "big"), want)
	// Without stopping on its own clock, it sent a second's worth at its rate (400) before
	// a store round trip told it so.
	if resumed := api.count() - before; resumed > rowModeCheckpoint {
		t.Errorf("the stalled process, resumed, called the API %d times, want at most %d: it went on after its lease ran out", resumed, rowModeCheckpoint)
	}
	if limit := rowModeRows + 2*(rowModeCheckpoint+rowModeConcurrency); api.count() > limit {
		t.Errorf("the API got %d calls for %d rows, want at most %d", api.count(), rowModeRows, limit)
	}
	t.Logf("%d calls for %d rows", api.count(), rowModeRows)
}

// TestRowModeEndToEnd: a per-row function of the functions file, through serve: its body
// template carries arguments with quotes, unicode and NULL as JSON, its header the
// function's custom header; the result path picks each row's value; a failed row becomes
// an error object (on-error: error); and a secret pinned to another host never reaches
// this one.
func TestRowModeEndToEnd(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var bodies []string
	var leaked bool
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Text any }
		raw, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(raw))
		leaked = leaked || strings.Contains(r.Header.Get("Authorization"), upstreamToken)
		mu.Unlock()
		if err := json.Unmarshal(raw, &in); err != nil {
			http.Error(w, "not JSON", http.StatusBadRequest)
			return
		}
		if in.Text == "missing" {
			http.Error(w, "no such thing", http.StatusNotFound)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"result": map[string]any{"echo": in.Text, "lang": r.Header.Get("X-Lang")}})
	}))
	t.Cleanup(api.Close)
	file := writeFile(t, fmt.Sprintf(`functions:
  - name: lookup
    http:
      mode: row
      url: %[1]s/lookup
      headers:
        X-Lang: '{{header "language"}}'
      body: '{"text": {{json (arg 0)}}}'
      result: result
      on-error: error
  - name: pinned
    http:
      mode: row
      url: %[1]s/lookup
      headers:
        Authorization: 'Bearer {{secret "token"}}'
      body: '{"text": {{json (arg 0)}}}'
      secrets:
        token: {env: API_TOKEN, hosts: [api.example.com]}
`, api.URL))
	s := startServer(t, serverConfig{args: []string{"--config", file}, env: map[string]string{"API_TOKEN": upstreamToken}})

	s.post("lookup", "b", rows(`say "hi"`, "ünïcode ✓", nil, "missing"), "sf-custom-language", "fr")
	r := s.await("lookup", "b", http.StatusOK)
	want := `{"data":[[0,{"echo":"say \"hi\"","lang":"fr"}],[1,{"echo":"ünïcode ✓","lang":"fr"}],[2,{"echo":null,"lang":"fr"}],` +
		`[3,{"error":"the upstream ` + api.URL + `/lookup answered 404 Not Found: no such thing","status":404}]]}`
	checkOK(t, r, want)
	mu.Lock()
	n := len(bodies)
	mu.Unlock()

	s.post("pinned", "p", rows("x"))
	// 400: the row's request is refused (its URL may come from the row).
	r = s.await("pinned", "p", http.StatusBadRequest)
	checkOneSentence(t, r)
	if !strings.Contains(r.Body, "secret token may not be sent") || strings.Contains(r.Body, upstreamToken) {
		t.Errorf("answer %v, want the refusal naming the secret, not its value", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != n || leaked {
		t.Errorf("the unpinned host got %d requests (the secret leaked: %v), want none", len(bodies)-n, leaked)
	}
	if strings.Contains(s.Stderr.String(), upstreamToken) {
		t.Error("the log shows the secret")
	}
}
