package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/asyncfn/asyncfn"
	asyncfnhttp "github.com/asyncfn/asyncfn/http"
	"github.com/asyncfn/asyncfn/metrics"
	"github.com/asyncfn/asyncfn/ratelimit"
	"github.com/asyncfn/asyncfn/status"
)

// minKeyLength rejects API keys short enough to guess.
const minKeyLength = 16

// production are the flags of a process reachable from other machines: authentication,
// metrics, the status page and the functions' rate limits.
type production struct {
	keys        listFlag
	keyFile     string
	insecure    bool
	metricsAddr string
	statusPage  bool
	rateLimits  listFlag
}

func (p *production) register(fs *flag.FlagSet, frontEnd bool) {
	fs.Var(&p.keys, "api-key", "a key callers must send as the sf-custom-api-key header (the function's HEADERS = ('api-key' = '...')) or as Authorization: Bearer; repeat it or separate keys with commas to accept several (rotation); also read from ASYNCFN_API_KEYS; none: no authentication, allowed on a loopback address only")
	fs.StringVar(&p.keyFile, "api-key-file", "", "a file of API keys, one per line (# starts a comment), added to --api-key: keeps keys out of the process list (systemd LoadCredential, mounted secrets)")
	fs.BoolVar(&p.insecure, "insecure", false, "allow listening on a non-loopback address without an API key, when something in front (an API gateway, a private network) already keeps strangers out")
	if frontEnd {
		fs.StringVar(&p.metricsAddr, "metrics-addr", "", "address to serve /metrics on instead of --addr (empty: /metrics on --addr)")
		fs.BoolVar(&p.statusPage, "status-page", true, "serve the status page for people at /status (and / redirecting to it)")
	} else {
		fs.StringVar(&p.metricsAddr, "metrics-addr", "", "address to serve /metrics on (empty: no metrics)")
	}
	fs.Var(&p.rateLimits, "rate-limit", "FUNCTION=ROWS_PER_SECOND[:BURST]: the most rows per second the function is given in this process, for a downstream service's quota; repeat it or separate with commas; none: no limit")
}

// apiKeys gathers the keys of --api-key, ASYNCFN_API_KEYS and --api-key-file.
func (p *production) apiKeys(getenv func(string) string) ([]string, error) {
	keys := slices.Clone(p.keys)
	if len(keys) == 0 {
		var env listFlag
		env.Set(getenv("ASYNCFN_API_KEYS"))
		keys = env
	}
	if p.keyFile != "" {
		f, err := os.Open(p.keyFile)
		if err != nil {
			return nil, fmt.Errorf("--api-key-file: %w", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
				keys = append(keys, line)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("--api-key-file %s: %w", p.keyFile, err)
		}
		if len(keys) == 0 {
			return nil, fmt.Errorf("--api-key-file %s holds no key", p.keyFile)
		}
	}
	for _, k := range keys {
		if len(k) < minKeyLength {
			return nil, Usagef("--api-key: a key must be at least %d characters long; make one with: openssl rand -hex 32", minKeyLength)
		}
	}
	return keys, nil
}

// limit applies --rate-limit to the functions.
func (p *production) limit(functions []asyncfn.Function) ([]asyncfn.Function, error) {
	var limits []ratelimit.Limit
	for _, s := range p.rateLimits {
		l, err := ratelimit.ParseLimit(s)
		if err != nil {
			return nil, fmt.Errorf("--rate-limit %w", err)
		}
		limits = append(limits, l)
	}
	fns, err := ratelimit.Apply(functions, limits)
	if err != nil {
		return nil, fmt.Errorf("--rate-limit %w", err)
	}
	return fns, nil
}

// listen listens on the address of flag flagName, as typed, and refuses one reachable from
// other machines without an API key, unless insecure: a service on 0.0.0.0 with no key is
// open to anyone who finds it. Errors quote the address as typed.
func listen(flagName, addr string, keys []string, insecure bool) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flagName, addr, err)
	}
	if len(keys) > 0 || insecure {
		return ln, nil
	}
	if a, ok := ln.Addr().(*net.TCPAddr); ok && a.IP.IsLoopback() {
		return ln, nil
	}
	ln.Close()
	return nil, Usagef("%s %s is reachable from other machines and no API key is set: set --api-key (or ASYNCFN_API_KEYS) so that only callers with the key get in, pass --insecure if something in front of the service (an API gateway, a private network) already keeps strangers out, or listen on 127.0.0.1", flagName, addr)
}

// observe sets up metrics (and the status page for a front end) for a process serving
// reg from store; it returns the store to use (instrumented) and the observer to give
// the service and the pool.
func (p *production) observe(reg *asyncfn.Registry, store asyncfn.Store, frontEnd bool) (*metrics.Metrics, *status.Recorder, asyncfn.Store, asyncfn.Observer) {
	m := metrics.New(reg)
	plain := store // the status page reads its Overview, which the instrumented store hides
	store = m.Store(store)
	m.WatchStore(store, 0)
	if !frontEnd || !p.statusPage {
		return m, nil, store, m
	}
	rec := status.New(reg, plain)
	return m, rec, store, asyncfn.Observers(m, rec)
}

// routes are the extra routes of a front end: the status page, and /metrics unless it
// has an address of its own. A function named after one of them would be shadowed.
func (p *production) routes(reg *asyncfn.Registry, m *metrics.Metrics, rec *status.Recorder, logger *slog.Logger) (map[string]http.Handler, error) {
	routes := map[string]http.Handler{}
	if rec != nil {
		for pattern, h := range rec.Routes(logger) {
			routes[pattern] = h
		}
		for _, path := range status.Paths {
			if _, ok := reg.Lookup(path); ok {
				return nil, fmt.Errorf("the function %s is hidden by the status page at /%s: rename the function or pass --status-page=false", path, path)
			}
		}
	}
	if p.metricsAddr == "" {
		routes["GET /metrics"] = m.Handler()
		if _, ok := reg.Lookup("metrics"); ok {
			return nil, errors.New("the function metrics is hidden by /metrics: rename the function or serve metrics elsewhere with --metrics-addr")
		}
	}
	return routes, nil
}

// protect wraps a handler in authentication and request metrics, in that order: a request
// refused for want of a key creates no series.
func protect(h http.Handler, m *metrics.Metrics, keys []string, logger *slog.Logger) http.Handler {
	return asyncfnhttp.RequireKey(keys, logger)(asyncfnhttp.ObserveRequests(m.ObserveHTTP)(h))
}

// listenMetrics listens on --metrics-addr, if set (nil otherwise), refusing an exposed
// address without an API key as --addr does.
func (p *production) listenMetrics(keys []string) (net.Listener, error) {
	if p.metricsAddr == "" {
		return nil, nil
	}
	return listen("--metrics-addr", p.metricsAddr, keys, p.insecure)
}

// serveMetrics serves /metrics on ln (if not nil) in the background; stop shuts it down
// and waits for it.
func serveMetrics(ctx context.Context, ln net.Listener, m *metrics.Metrics, keys []string, logger *slog.Logger) (stop func()) {
	if ln == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := serveHTTP(ctx, ln, asyncfnhttp.Recover(logger)(asyncfnhttp.RequireKey(keys, logger)(mux)), 0, logger); err != nil {
			logger.Error("serving metrics failed", "err", err)
		}
	}()
	return func() { cancel(); <-done }
}

// listFlag is a repeatable flag whose values may also be separated by commas.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}
