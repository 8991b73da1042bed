package pgtest

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/asyncfn/asyncfn/storetest"
)

// StartProxy starts a storetest.Proxy to the server of dsn and returns it with dsn
// rewritten to connect through it. A server reached by a Unix socket skips the test: the
// proxy forwards TCP only.
func StartProxy(t testing.TB, dsn string) (*storetest.Proxy, string) {
	t.Helper()
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(cfg.Host, "/") {
		t.Skip("the test server is reached by a Unix socket, which the proxy does not forward")
	}
	p := storetest.StartProxy(t, net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port)))
	host, port, _ := net.SplitHostPort(p.Addr())
	return p, Param(Param(dsn, "host", host), "port", port)
}
