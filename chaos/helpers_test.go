package chaos_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/asyncfn/asyncfn/internal/syncbuf"
)

// tmpDir holds the binary for the whole test run; TestMain removes it.
var tmpDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "asyncfn-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tmpDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
	buildOut  []byte
)

// binary builds ./cmd/asyncfn once per test run (on first use, so that skipped tests
// build nothing) and returns its path.
func binary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(tmpDir, "asyncfn")
	buildOnce.Do(func() {
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/asyncfn")
		cmd.Dir = ".." // the module root
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("go build ./cmd/asyncfn: %v\n%s", buildErr, buildOut)
	}
	return bin
}

// environ is the test's environment without ASYNCFN_* variables, which would set the
// processes' flags.
func environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ASYNCFN_") {
			env = append(env, kv)
		}
	}
	return env
}

// firstLine is a writer that hands its first line to a channel and discards the rest.
type firstLine struct {
	mu   sync.Mutex
	buf  []byte
	done bool
	c    chan string
}

func (w *firstLine) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.buf = append(w.buf, p...)
		if i := bytes.IndexByte(w.buf, '\n'); i >= 0 {
			w.done = true
			w.c <- string(w.buf[:i])
			w.buf = nil
		}
	}
	return len(p), nil
}

// proc is one asyncfn process.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stderr *syncbuf.Buffer
	banner string
	addr   string        // host:port it serves HTTP on, if any
	exited chan struct{} // closed when it has exited
}

var addrRE = regexp.MustCompile(`on http://(\S+)`)

// start runs the binary with args and waits for its first stdout line (it prints it once
// its store is open and migrated, and its listener bound). It is killed at cleanup.
func start(t testing.TB, name string, args ...string) (*proc, error) {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(binary(t), args...), stderr: &syncbuf.Buffer{}, exited: make(chan struct{})}
	p.cmd.Env = environ()
	p.cmd.Stderr = p.stderr
	first := &firstLine{c: make(chan string, 1)}
	p.cmd.Stdout = first
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("%s (pid %d) stderr, the end:\n%s", p.name, p.cmd.Process.Pid, tail(p.stderr.String(), 6<<10))
		}
	})
	select {
	case p.banner = <-first.c:
	case <-p.exited:
		return nil, fmt.Errorf("%s exited before it started: %v\n%s", name, p.cmd.ProcessState, tail(p.stderr.String(), 4<<10))
	case <-time.After(30 * time.Second):
		p.kill()
		return nil, fmt.Errorf("%s printed nothing in 30s:\n%s", name, tail(p.stderr.String(), 4<<10))
	}
	if m := addrRE.FindStringSubmatch(p.banner); m != nil {
		p.addr = m[1]
	}
	return p, nil
}

// mustStart is start failing the test on error.
func mustStart(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	p, err := start(t, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// kill sends SIGKILL and waits for the process to exit.
func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "...\n" + s[len(s)-n:]
}

func randomSuffix() string { return strings.ToLower(rand.Text()[:10]) }

// connect opens the test's own connection to the database.
func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}
