package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/cli"
	"github.com/asyncfn/asyncfn/internal/syncbuf"
)

// server is one run of cli.Main serving on a free port.
type server struct {
	t      testing.TB
	URL    string
	Store  string
	Banner string // the first stdout line
	Stderr *syncbuf.Buffer
	client *http.Client
	cancel context.CancelFunc
	done   chan error

	stopOnce sync.Once
	stopErr  error
}

var bannerRE = regexp.MustCompile(`^asyncfn: serving .* on http://(\S+) \(`)

// runMain runs cli.Main with args in the background and waits for its first stdout line.
// It returns Main's error if Main returns before printing one.
func runMain(t testing.TB, args []string, env map[string]string, fns ...asyncfn.Function) (*server, error) {
	t.Helper()
	return runMainWith(t, args, env, cli.Options{Functions: fns})
}

// runMainWith is runMain with every option of cli.Main.
func runMainWith(t testing.TB, args []string, env map[string]string, opts cli.Options) (*server, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := &server{
		t:      t,
		Stderr: &syncbuf.Buffer{},
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}},
		cancel: cancel,
		done:   make(chan error, 1),
	}
	getenv := func(name string) string { return env[name] }
	go func() {
		err := cli.Main(ctx, args, getenv, pw, s.Stderr, opts)
		pw.CloseWithError(fmt.Errorf("cli.Main returned: %v", err))
		s.done <- err
	}()
	type line struct {
		text string
		err  error
	}
	first := make(chan line, 1)
	go func() {
		br := bufio.NewReader(pr)
		text, err := br.ReadString('\n')
		first <- line{text, err}
		io.Copy(io.Discard, br) // never block Main's later writes
	}()
	select {
	case l := <-first:
		if l.err != nil {
			cancel()
			return nil, <-s.done
		}
		s.Banner = strings.TrimSpace(l.text)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("cli.Main %v printed nothing in 30s; stderr:\n%s", args, s.Stderr)
	}
	if m := bannerRE.FindStringSubmatch(s.Banner); m != nil {
		s.URL = "http://" + m[1]
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("cli.Main returned %v after its context was cancelled, want nil", err)
		}
		if t.Failed() {
			logs := s.Stderr.String()
			if len(logs) > 16<<10 {
				logs = "...\n" + logs[len(logs)-16<<10:]
			}
			t.Logf("server %s stderr:\n%s", s.URL, logs)
		}
	})
	return s, nil
}

// serverConfig says how to start a server; the zero value is a server of the given
// functions on a fresh SQLite file with the defaults.
type serverConfig struct {
	store string // default: a.db in a fresh temporary directory
	args  []string
	env   map[string]string
	fns   []asyncfn.Function
}

// startServer runs `serve --addr 127.0.0.1:0 --store STORE ARGS...` and fails the test if it
// does not start.
func startServer(t *testing.T, c serverConfig) *server {
	t.Helper()
	if c.store == "" {
		c.store = filepath.Join(t.TempDir(), "a.db")
	}
	args := append([]string{"serve", "--addr", "127.0.0.1:0", "--store", c.store}, c.args...)
	s, err := runMain(t, args, c.env, c.fns...)
	if err != nil {
		t.Fatalf("cli.Main %v: %v", args, err)
	}
	if s.URL == "" {
		t.Fatalf("cannot read the address in the first stdout line %q", s.Banner)
	}
	s.Store = c.store
	return s
}

// with returns a view of the server whose requests report to t (a subtest's).
func (s *server) with(t *testing.T) *server {
	return &server{t: t, URL: s.URL, Store: s.Store, Banner: s.Banner, Stderr: s.Stderr, client: s.client}
}

// Stop cancels Main's context and waits for it to return; it returns Main's error.
func (s *server) Stop() error {
	s.stopOnce.Do(func() {
		s.cancel()
		// A connection dialled but never used (a spare of the client's pool) holds
		// http.Server.Shutdown for 5 s: close ours, as a client going away would.
		s.client.CloseIdleConnections()
		select {
		case s.stopErr = <-s.done:
		case <-time.After(60 * time.Second):
			s.stopErr = fmt.Errorf("cli.Main did not return within 60s of its context's cancellation")
		}
	})
	return s.stopErr
}

// reply is an HTTP answer, read whole.
type reply struct {
	Status int
	Header http.Header
	Body   string
	Sent   time.Time // when the request was sent
}

func (r reply) String() string { return fmt.Sprintf("%d %q", r.Status, r.Body) }

// do sends a request with the given headers (name, value pairs) as they are: lower-case on
// the wire, as Snowflake's proxies send them. A transport error fails the test (with
// Errorf: do may run on any goroutine) and is returned as status 0.
func (s *server) do(method, path string, body io.Reader, header ...string) reply {
	s.t.Helper()
	r, err := s.try(method, path, body, header...)
	if err != nil {
		s.t.Errorf("%s %s: %v", method, path, err)
	}
	return r
}

// try is do that returns a transport error instead of failing the test.
func (s *server) try(method, path string, body io.Reader, header ...string) (reply, error) {
	sent := time.Now()
	req, err := http.NewRequest(method, s.URL+path, body)
	if err != nil {
		return reply{Sent: sent, Body: err.Error()}, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header[header[i]] = []string{header[i+1]}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return reply{Sent: sent, Body: err.Error()}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{Sent: sent, Body: err.Error()}, fmt.Errorf("reading the body: %w", err)
	}
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: string(b), Sent: sent}, nil
}

// sfHeaders are the headers Snowflake sends with each request of batch id to function fn,
// followed by extra pairs.
func sfHeaders(fn, id string, extra ...string) []string {
	return append([]string{
		"sf-external-function-query-batch-id", id,
		"sf-external-function-current-query-id", "query-" + id,
		"sf-external-function-query-id", "query-" + id,
		"sf-external-function-format", "json",
		"sf-external-function-format-version", "1.0",
		"sf-external-function-name", fn,
		"sf-external-function-name-base64", "ZWNobw==",
		"user-agent", "snowflake/1.0",
		"content-type", "application/json",
	}, extra...)
}

// post sends a batch as Snowflake does.
func (s *server) post(fn, id string, body []byte, extra ...string) reply {
	s.t.Helper()
	return s.do(http.MethodPost, "/"+fn, bytes.NewReader(body), sfHeaders(fn, id, extra...)...)
}

// get polls for a batch as Snowflake does: the same headers, no body.
func (s *server) get(fn, id string) reply {
	s.t.Helper()
	return s.do(http.MethodGet, "/"+fn, nil, sfHeaders(fn, id)...)
}

// await polls the batch with GET, with a growing pause, until it is answered with
// something else than 202, and fails unless that is want.
func (s *server) await(fn, id string, want int) reply {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	pause := 2 * time.Millisecond
	for {
		r := s.get(fn, id)
		if r.Status != http.StatusAccepted {
			if r.Status != want {
				s.t.Fatalf("GET %s/%s = %v, want %d", fn, id, r, want)
			}
			return r
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("GET %s/%s still 202 after 30s", fn, id)
		}
		time.Sleep(pause)
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// eventually retries cond with a short pause until it holds, or fails after 20s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rows returns the body Snowflake sends for one argument per row: {"data":[[0,v0],...]}.
func rows(values ...any) []byte {
	data := make([][]any, len(values))
	for i, v := range values {
		data[i] = []any{i, v}
	}
	b, err := json.Marshal(map[string]any{"data": data})
	if err != nil {
		panic(err)
	}
	return b
}

// echoed is the answer of the echo function to rows(values...): the same rows, exactly.
func echoed(values ...any) string {
	var b strings.Builder
	b.WriteString(`{"data":[`)
	for i, v := range values {
		if i > 0 {
			b.WriteByte(',')
		}
		j, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		fmt.Fprintf(&b, "[%d,%s]", i, j)
	}
	b.WriteString(`]}`)
	return b.String()
}

// checkOK fails unless r is a 200 with exactly the body want.
func checkOK(t *testing.T, r reply, want string) {
	t.Helper()
	if r.Status != http.StatusOK || r.Body != want {
		t.Errorf("got %v, want 200 %q", r, want)
	}
	if ct := r.Header.Get("Content-Type"); r.Status == http.StatusOK && ct != "application/json" {
		t.Errorf("200 with Content-Type %q", ct)
	}
}

// checkSentence fails unless r is a 4xx whose body is one sentence on one line.
func checkSentence(t *testing.T, r reply) {
	t.Helper()
	if r.Status < 400 || r.Status >= 500 {
		t.Errorf("status %d, want a 4xx", r.Status)
	}
	checkOneSentence(t, r)
}

// checkOneSentence fails unless the body is one sentence on one line, whatever the status.
func checkOneSentence(t *testing.T, r reply) {
	t.Helper()
	if r.Body == "" || strings.ContainsAny(r.Body, "\r\n") || !strings.HasSuffix(r.Body, ".") {
		t.Errorf("error body %q is not one sentence on one line ending with '.'", r.Body)
	}
}

// gate is a function that blocks each call until opened (or its context is done), and
// counts its calls and how many run at once.
type gate struct {
	calls      atomic.Int32
	running    atomic.Int32
	maxRunning atomic.Int32
	started    chan string // the first argument of each call's first row
	release    chan struct{}
	openOnce   sync.Once
}

func newGate() *gate {
	return &gate{started: make(chan string, 1000), release: make(chan struct{})}
}

func (g *gate) open() { g.openOnce.Do(func() { close(g.release) }) }

// Func echoes the rows once the gate is open; it honours its context.
func (g *gate) Func() asyncfn.Func {
	return asyncfn.FuncOf(func(ctx context.Context, rs []asyncfn.Row) ([]any, error) {
		g.calls.Add(1)
		n := g.running.Add(1)
		defer g.running.Add(-1)
		for {
			m := g.maxRunning.Load()
			if n <= m || g.maxRunning.CompareAndSwap(m, n) {
				break
			}
		}
		first := ""
		if len(rs) > 0 && len(rs[0].Args) > 0 {
			json.Unmarshal(rs[0].Args[0], &first)
		}
		select {
		case g.started <- first:
		default:
		}
		select {
		case <-g.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return asyncfn.Echo.Call(ctx, rs)
	})
}

// waitStarted waits for the next call to start and returns its first argument.
func (g *gate) waitStarted(t *testing.T) string {
	t.Helper()
	select {
	case s := <-g.started:
		return s
	case <-time.After(20 * time.Second):
		t.Fatal("the function was not called within 20s")
		return ""
	}
}

// counted wraps fn with a call counter.
func counted(calls *atomic.Int32, fn asyncfn.Func) asyncfn.Func {
	return asyncfn.FuncOf(func(ctx context.Context, rs []asyncfn.Row) ([]any, error) {
		calls.Add(1)
		return fn.Call(ctx, rs)
	})
}

// binary builds ./cmd/asyncfn into a temporary folder of t and returns its path, for tests
// that kill the real process.
func binary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "asyncfn")
	build := exec.Command("go", "build", "-o", bin, "./cmd/asyncfn")
	build.Dir = ".." // the module root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/asyncfn: %v\n%s", err, out)
	}
	return bin
}

// startBinary starts the binary bin with args, without the test's ASYNCFN_ variables, and
// returns it once it printed its banner, with a server to talk to it. It is killed at
// cleanup, its stderr logged if the test failed.
func startBinary(t *testing.T, bin string, args ...string) (*exec.Cmd, *server) {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ASYNCFN_") {
			env = append(env, kv)
		}
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	stderr := &syncbuf.Buffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("asyncfn %d stderr (tail):\n%s", cmd.Process.Pid, tail(stderr.String(), 8<<10))
		}
	})
	first := make(chan string, 1)
	go func() {
		br := bufio.NewReader(stdout)
		line, _ := br.ReadString('\n')
		first <- line
		io.Copy(io.Discard, br)
	}()
	var line string
	select {
	case line = <-first:
	case <-time.After(30 * time.Second):
		t.Fatalf("asyncfn printed nothing in 30s; stderr:\n%s", stderr)
	}
	m := bannerRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("first stdout line %q; stderr:\n%s", line, stderr)
	}
	return cmd, &server{t: t, URL: "http://" + m[1], Stderr: stderr, client: &http.Client{Timeout: 30 * time.Second}}
}

// kill9 kills the process at once, as a crash or an OOM killer would.
func kill9(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
}
