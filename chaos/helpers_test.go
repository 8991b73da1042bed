package chaos_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/url"
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

// syncBuffer is a bytes.Buffer safe for a process's output copier and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
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
	stderr *syncBuffer
	banner string
	addr   string        // host:port it serves HTTP on, if any
	exited chan struct{} // closed when it has exited
}

var addrRE = regexp.MustCompile(`on http://(\S+)`)

// start runs the binary with args and waits for its first stdout line (it prints it once
// its store is open and migrated, and its listener bound). It is killed at cleanup.
func start(t testing.TB, name string, args ...string) (*proc, error) {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(binary(t), args...), stderr: &syncBuffer{}, exited: make(chan struct{})}
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

// setDSNHost returns dsn, a URL, with its host and port replaced.
func setDSNHost(t testing.TB, dsn, hostport string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("ASYNCFN_TEST_POSTGRES must be a postgres:// URL for the chaos tests, not %q", dsn)
	}
	u.Host = hostport
	return u.String()
}

// dsnHost returns the host:port of a postgres:// URL (default port 5432).
func dsnHost(t testing.TB, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("ASYNCFN_TEST_POSTGRES must be a postgres:// URL for the chaos tests, not %q", dsn)
	}
	host := u.Hostname()
	if host == "" {
		host = "localhost"
	}
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	return net.JoinHostPort(host, port)
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

// proxy forwards TCP connections to PostgreSQL, so that the test can cut the processes
// off the database (an outage) without touching the server that others use.
type proxy struct {
	target string
	addr   string // fixed after the first up

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	p := &proxy{target: target, addr: "127.0.0.1:0", conns: map[net.Conn]struct{}{}}
	if err := p.up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.down(); p.wg.Wait() })
	return p
}

// up listens (again, on the same address) and forwards.
func (p *proxy) up() error {
	var ln net.Listener
	var err error
	for range 50 { // the port was just closed: another may be binding it; unlikely
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("proxy: listening on %s again: %w", p.addr, err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.forward(c) })
		}
	})
	return nil
}

func (p *proxy) forward(c net.Conn) {
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil { // went down meanwhile
		p.mu.Unlock()
		c.Close()
		s.Close()
		return
	}
	p.conns[c], p.conns[s] = struct{}{}, struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		dst.Close()
		src.Close()
	}
	wg.Go(func() { pipe(s, c) })
	wg.Go(func() { pipe(c, s) })
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, s)
	p.mu.Unlock()
}

// down stops listening (new connections are refused) and cuts every connection.
func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
}
