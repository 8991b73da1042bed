package pgtest

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Proxy forwards TCP connections to the test's PostgreSQL server, so that a test can cut
// its processes off the database (an outage: new connections refused, open ones cut) and
// restore it, without touching the server that other tests use.
type Proxy struct {
	target string
	addr   string // fixed after the first Up

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// StartProxy starts a proxy to the server of dsn and returns it with dsn rewritten to
// connect through it. A server reached by a Unix socket skips the test: the proxy
// forwards TCP only.
func StartProxy(t testing.TB, dsn string) (*Proxy, string) {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(cfg.Host, "/") {
		t.Skip("the test server is reached by a Unix socket, which the proxy does not forward")
	}
	p := &Proxy{target: net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port)), addr: "127.0.0.1:0", conns: map[net.Conn]struct{}{}}
	if err := p.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Down(); p.wg.Wait() })
	host, port, _ := net.SplitHostPort(p.addr)
	return p, Param(Param(dsn, "host", host), "port", port)
}

// Up listens (again, on the same address) and forwards.
func (p *Proxy) Up() error {
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

func (p *Proxy) forward(c net.Conn) {
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

// Down stops listening (new connections are refused) and cuts every connection.
func (p *Proxy) Down() {
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
