package cli_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/cli"
	"github.com/asyncfn/asyncfn/funcfile"
)

const upstreamToken = "tok-3f9a7c1e5b2d-never-shown"

// writeFile writes a functions file in a new directory and returns its path.
func writeFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "functions.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// upstreamRequest is what a local upstream saw of one request.
type upstreamRequest struct {
	method string
	header http.Header
	body   string
	at     time.Time
}

// recorder is a local upstream that records its requests and answers each with answer.
type recorder struct {
	mu       sync.Mutex
	requests []upstreamRequest
	answer   func(n int, w http.ResponseWriter, r *http.Request, body []byte) // n counts from 1
}

func (u *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.requests = append(u.requests, upstreamRequest{r.Method, r.Header.Clone(), string(body), time.Now()})
	n := len(u.requests)
	u.mu.Unlock()
	u.answer(n, w, r, body)
}

func (u *recorder) seen() []upstreamRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]upstreamRequest(nil), u.requests...)
}

// echoAnswer answers a Snowflake batch with its first arguments, as a synchronous
// external-function service would.
func echoAnswer(w http.ResponseWriter, body []byte) {
	var req struct{ Data [][]json.RawMessage }
	if err := json.Unmarshal(body, &req); err != nil {
		http.Error(w, "bad request body", http.StatusBadRequest)
		return
	}
	out := make([][2]json.RawMessage, len(req.Data))
	for i, row := range req.Data {
		out[i] = [2]json.RawMessage{row[0], row[1]}
	}
	json.NewEncoder(w).Encode(map[string]any{"data": out})
}

// TestFunctionsFileHTTP: a synchronous service declared in the file is served
// asynchronously: it gets Snowflake's body and headers (batch and query ids, function
// name and signature, custom and context headers) and the header of the file whose value
// is a secret from the environment; its answer is the batch's. The status page and
// /metrics show the function and its upstream, and neither they nor the log show the
// secret.
func TestFunctionsFileHTTP(t *testing.T) {
	t.Parallel()
	up := &recorder{answer: func(_ int, w http.ResponseWriter, _ *http.Request, body []byte) { echoAnswer(w, body) }}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	file := writeFile(t, fmt.Sprintf(`functions:
  - name: classify
    http:
      url: %s/classify?key=query-secret
      headers:
        Authorization: {env: CLASSIFY_TOKEN, prefix: "Bearer "}
        X-Team: data
`, srv.URL))
	s := startServer(t, serverConfig{args: []string{"--config", file}, env: map[string]string{"CLASSIFY_TOKEN": upstreamToken}})

	r := s.post("classify", "b-1", rows("it's good", "ünïcode", nil),
		"sf-external-function-signature", "(TEXT VARCHAR)", "sf-custom-language", "fr", "sf-context-current_user", "ALICE",
		"sf-custom-api-key", "callers-key-not-for-upstream")
	if r.Status != http.StatusAccepted && r.Status != http.StatusOK {
		t.Fatalf("POST = %v", r)
	}
	checkOK(t, s.await("classify", "b-1", http.StatusOK), echoed("it's good", "ünïcode", nil))

	seen := up.seen()
	if len(seen) != 1 {
		t.Fatalf("the upstream got %d requests, want 1", len(seen))
	}
	got := seen[0]
	want := map[string]string{
		"Sf-External-Function-Query-Batch-Id":   "b-1",
		"Sf-External-Function-Current-Query-Id": "query-b-1",
		"Sf-External-Function-Name":             "classify",
		"Sf-External-Function-Signature":        "(TEXT VARCHAR)",
		"Sf-External-Function-Format":           "json",
		"Sf-Custom-Language":                    "fr",
		"Sf-Context-Current_user":               "ALICE",
		"Authorization":                         "Bearer " + upstreamToken,
		"X-Team":                                "data",
		"Sf-Custom-Api-Key":                     "",
	}
	for name, value := range want {
		if v := got.header.Get(name); v != value {
			t.Errorf("the upstream got %s: %q, want %q", name, v, value)
		}
	}
	if got.method != http.MethodPost || got.body != string(rows("it's good", "ünïcode", nil)) {
		t.Errorf("the upstream got %s %s, want the POST's body", got.method, got.body)
	}

	page := s.do(http.MethodGet, "/status.json", nil).Body
	if !strings.Contains(page, `"runs":"`+srv.URL+`/classify"`) {
		t.Errorf("status.json does not show the function's upstream:\n%s", page)
	}
	html := s.do(http.MethodGet, "/status", nil).Body
	if !strings.Contains(html, srv.URL+"/classify") {
		t.Error("the status page does not show the function's upstream")
	}
	if n := metric(t, s, `asyncfn_upstream_requests_total{class="2xx",function="classify"}`); n != 1 {
		t.Errorf("asyncfn_upstream_requests_total 2xx = %v, want 1", n)
	}
	for what, text := range map[string]string{"status.json": page, "the status page": html, "the log": s.Stderr.String(), "/metrics": s.do(http.MethodGet, "/metrics", nil).Body} {
		if strings.Contains(text, upstreamToken) || strings.Contains(text, "query-secret") {
			t.Errorf("%s shows a secret", what)
		}
	}
}

// TestFunctionsFileMisbehavingUpstreams: what the SQL user sees for each way an upstream
// can misbehave, end to end through serve; each function of one file has an upstream of
// its own.
func TestFunctionsFileMisbehavingUpstreams(t *testing.T) {
	t.Parallel()
	var hangs sync.WaitGroup
	release := make(chan struct{})
	behaviours := map[string]func(n int, w http.ResponseWriter, r *http.Request, body []byte){
		"slow": func(_ int, w http.ResponseWriter, r *http.Request, body []byte) {
			select { // slower than the function's timeout of 1s
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
			}
			echoAnswer(w, body)
		},
		"throttled": func(n int, w http.ResponseWriter, _ *http.Request, body []byte) {
			if n == 1 {
				w.Header().Set("Retry-After", "1")
				http.Error(w, "slow down", http.StatusTooManyRequests)
				return
			}
			echoAnswer(w, body)
		},
		"flaky": func(n int, w http.ResponseWriter, _ *http.Request, body []byte) {
			if n == 1 {
				http.Error(w, "database restarting", http.StatusInternalServerError)
				return
			}
			echoAnswer(w, body)
		},
		"garbage": func(int, http.ResponseWriter, *http.Request, []byte) {},
		"short": func(_ int, w http.ResponseWriter, _ *http.Request, _ []byte) {
			io.WriteString(w, `{"data":[[0,"only one"]]}`)
		},
		"unordered": func(_ int, w http.ResponseWriter, _ *http.Request, _ []byte) {
			io.WriteString(w, `{"data":[[1,"b"],[0,"a"]]}`)
		},
		"rejects": func(_ int, w http.ResponseWriter, _ *http.Request, _ []byte) {
			http.Error(w, "column 2 must be a number", http.StatusBadRequest)
		},
	}
	behaviours["garbage"] = func(_ int, w http.ResponseWriter, _ *http.Request, _ []byte) { io.WriteString(w, "<html>oops</html>") }
	recorders := map[string]*recorder{}
	mux := http.NewServeMux()
	for name, b := range behaviours {
		recorders[name] = &recorder{answer: b}
		mux.Handle("/"+name, recorders[name])
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	// A hanging connection: accepted, read, never answered.
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(release); hang.Close(); hangs.Wait() })
	hangs.Add(1)
	go func() {
		defer hangs.Done()
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			hangs.Add(1)
			go func() { defer hangs.Done(); io.Copy(io.Discard, c) }()
			go func() { <-release; c.Close() }()
		}
	}()
	var file strings.Builder
	file.WriteString("functions:\n")
	for name := range behaviours {
		timeout := "10s"
		if name == "slow" {
			timeout = "1s"
		}
		fmt.Fprintf(&file, "  - name: %s\n    max-attempts: 1\n    http:\n      url: %s/%s\n      timeout: %s\n      min-backoff: 10ms\n", name, srv.URL, name, timeout)
	}
	fmt.Fprintf(&file, "  - name: hanging\n    max-attempts: 1\n    http:\n      url: http://%s/\n      timeout: 1s\n", hang.Addr())
	s := startServer(t, serverConfig{args: []string{"--config", writeFile(t, file.String())}})

	for _, c := range []struct {
		name     string
		status   int
		says     string // in the error, or the rows of a 200
		requests int
	}{
		{"slow", http.StatusUnprocessableEntity, "gave no final answer within 1s, the function's timeout", 1},
		{"hanging", http.StatusUnprocessableEntity, "gave no final answer within 1s", 0},
		{"throttled", http.StatusOK, echoed("a", "b"), 2},
		{"flaky", http.StatusOK, echoed("a", "b"), 2},
		{"garbage", http.StatusUnprocessableEntity, "sent a bad answer: the answer is not valid JSON", 1},
		{"short", http.StatusUnprocessableEntity, "sent a bad answer", 1},
		{"unordered", http.StatusUnprocessableEntity, "sent a bad answer", 1},
		{"rejects", http.StatusBadRequest, "rejected the rows: 400 Bad Request: column 2 must be a number", 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := s.with(t)
			s.post(c.name, "b", rows("a", "b"))
			r := s.await(c.name, "b", c.status)
			if c.status == http.StatusOK {
				checkOK(t, r, c.says)
			} else {
				checkOneSentence(t, r)
				if !strings.Contains(r.Body, c.says) {
					t.Errorf("answer %v, want it to say %q", r, c.says)
				}
			}
			if rec := recorders[c.name]; rec != nil {
				seen := rec.seen()
				if len(seen) != c.requests {
					t.Errorf("the upstream got %d requests, want %d", len(seen), c.requests)
				}
				if c.name == "throttled" && len(seen) == 2 {
					if gap := seen[1].at.Sub(seen[0].at); gap < 900*time.Millisecond {
						t.Errorf("sent again %s after a 429 with Retry-After: 1, want at least 1s", gap)
					}
				}
			}
		})
	}
}

// TestFunctionsFileExec: a command declared in the file serves its function; one that
// crashes, prints garbage or hangs fails the batch with a sentence saying so (its
// attempts spent), and is restarted for the next batch.
func TestFunctionsFileExec(t *testing.T) {
	t.Parallel()
	// One process: a line with "crash" makes it exit, "garbage" answers garbage, "hang"
	// hangs; others are echoed.
	const script = `while read -r line; do
  case "$line" in
    *crash*) echo "crashing on purpose" >&2; exit 3 ;;
    *garbage*) echo "not json" ;;
    *hang*) sleep 3600 ;;
    *) echo "$line" | sed 's/^{"data":\[\[0,\(.*\)\]\]}$/{"data":[[0,\1]]}/' ;;
  esac
done`
	file := writeFile(t, fmt.Sprintf(`functions:
  - name: script
    max-attempts: 2
    backoff: 10ms
    exec:
      command: ["sh", "-c", %q]
      timeout: 1s
      grace-period: 1s
`, script))
	s := startServer(t, serverConfig{args: []string{"--config", file}})
	s.post("script", "ok", rows("fine"))
	checkOK(t, s.await("script", "ok", http.StatusOK), echoed("fine"))
	for _, c := range []struct{ arg, says string }{
		{"crash", "exited before answering"},
		{"garbage", "answered a line that is not a valid answer"},
		{"hang", "did not answer within 1s"},
	} {
		s.post("script", c.arg, rows(c.arg))
		r := s.await("script", c.arg, http.StatusUnprocessableEntity)
		checkOneSentence(t, r)
		if !strings.Contains(r.Body, c.says) || !strings.Contains(r.Body, "2 times") {
			t.Errorf("%s: answer %v, want it to say %q after 2 attempts", c.arg, r, c.says)
		}
		s.post("script", c.arg+"-after", rows("fine again"))
		checkOK(t, s.await("script", c.arg+"-after", http.StatusOK), echoed("fine again"))
	}
	if n := metric(t, s, `asyncfn_process_restarts_total{function="script"}`); n < 6 {
		t.Errorf("asyncfn_process_restarts_total = %v, want a restart for each of the 6 failed attempts", n)
	}
	if !strings.Contains(s.Stderr.String(), "crashing on purpose") {
		t.Error("the process's standard error is not in the log")
	}
	if !strings.Contains(s.do(http.MethodGet, "/status.json", nil).Body, `"runs":"sh -c `) {
		t.Error("status.json does not show the function's command")
	}
}

// TestFunctionsFileCheck: --check says what the file declares and exits, without
// serving nor starting a process; a mistake names the file and line, and a name taken by
// a function of the binary is refused.
func TestFunctionsFileCheck(t *testing.T) {
	t.Parallel()
	good := writeFile(t, "functions:\n  - name: classify\n    http: {url: 'http://127.0.0.1:1/c?key=x'}\n  - name: score\n    exec: {command: [sh, -c, 'touch started']}\n")
	var stdout, stderr strings.Builder
	getenv := func(string) string { return "" }
	if err := cli.Main(t.Context(), []string{"serve", "--config", good, "--check"}, getenv, &stdout, &stderr, cli.Options{}); err != nil {
		t.Fatalf("--check of a good file: %v", err)
	}
	want := "asyncfn: " + good + " is valid: 2 functions\n  /classify  http http://127.0.0.1:1/c\n  /score  exec sh -c \"touch started\"\n"
	if stdout.String() != want {
		t.Errorf("--check printed\n%s\nwant\n%s", stdout.String(), want)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(good), "started")); err == nil {
		t.Error("--check started the process")
	}
	for _, c := range []struct {
		args []string
		text string
		says string
	}{
		{[]string{"serve"}, "functions:\n  - name: a\n    http:\n      url: http://h/\n      timeout: soon\n", `:5: timeout: "soon" is not a positive duration`},
		{[]string{"worker"}, "functions:\n  - name: a\n    htp: {url: http://h/}\n", ":3: a function: unknown key htp"},
		{[]string{"serve"}, "functions:\n  - name: echo\n    http: {url: http://h/}\n", ":2: the function echo is already served by this binary"},
	} {
		path := writeFile(t, c.text)
		err := cli.Main(t.Context(), append(c.args, "--config", path, "--check"), getenv, io.Discard, io.Discard, cli.Options{Functions: []asyncfn.Function{echoFn}})
		var fe *funcfile.Error
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), path+c.says) {
			t.Errorf("%s --check: error %v, want one saying %q", c.args[0], err, path+c.says)
		}
	}
	err := cli.Main(t.Context(), []string{"serve", "--check"}, getenv, io.Discard, io.Discard, cli.Options{})
	var usage *cli.UsageError
	if !errors.As(err, &usage) {
		t.Errorf("--check without --config: %v, want a usage error", err)
	}
}

// TestFunctionsFileProcessesStopWithServe: the file's processes end when serve does.
func TestFunctionsFileProcessesStopWithServe(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "pid")
	file := writeFile(t, fmt.Sprintf("functions:\n  - name: script\n    exec:\n      command: [sh, -c, 'echo $$ > %s; exec cat']\n      grace-period: 2s\n", pidFile))
	s := startServer(t, serverConfig{args: []string{"--config", file}})
	var pid int
	eventually(t, "the process writes its pid", func() bool {
		b, _ := os.ReadFile(pidFile)
		_, err := fmt.Sscan(string(b), &pid)
		return err == nil
	})
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if processAlive(pid) {
		t.Errorf("process %d still runs after serve returned", pid)
	}
}

// TestKill9WithABatchInFlightToAnUpstream: the real binary is killed while a batch is at
// its upstream; after a restart the batch is sent again (with the same batch id, the
// upstream's idempotency key) and answers its exact rows.
func TestKill9WithABatchInFlightToAnUpstream(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	arrived := make(chan struct{}, 1)
	up := &recorder{answer: func(n int, w http.ResponseWriter, r *http.Request, body []byte) {
		if n == 1 {
			arrived <- struct{}{}
			<-r.Context().Done() // held until the client is gone: killed
			return
		}
		echoAnswer(w, body)
	}}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	file := writeFile(t, fmt.Sprintf("functions:\n  - name: classify\n    http:\n      url: %s/\n", srv.URL))
	store := filepath.Join(t.TempDir(), "a.db")
	args := []string{"serve", "--addr", "127.0.0.1:0", "--store", store, "--config", file, "--lease", "1s", "--sync-wait", "0"}

	cmd, s := startBinary(t, bin, args...)
	want := []any{"a", "b", "c"}
	if r := s.post("classify", "in-flight", rows(want...)); r.Status != http.StatusAccepted {
		t.Fatalf("POST = %v, want 202", r)
	}
	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("the batch never reached the upstream")
	}
	kill9(t, cmd)

	_, s = startBinary(t, bin, args...)
	checkOK(t, s.await("classify", "in-flight", http.StatusOK), echoed(want...))
	seen := up.seen()
	if len(seen) != 2 {
		t.Fatalf("the upstream got %d requests, want 2 (the one cut by the kill, then one)", len(seen))
	}
	for i, r := range seen {
		if id := r.header.Get("sf-external-function-query-batch-id"); id != "in-flight" || r.body != string(rows(want...)) {
			t.Errorf("request %d: batch id %q, body %s; want the batch's id and rows", i, id, r.body)
		}
	}
}

// processAlive reports whether a process with pid exists.
func processAlive(pid int) bool { return syscall.Kill(pid, 0) == nil }
