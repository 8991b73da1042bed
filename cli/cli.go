// Package cli is the command line of asyncfn's server processes (serve, worker, migrate),
// parameterised by the functions to serve, so that a Go user's own binary with their own
// functions gets the same commands and flags as asyncfn itself:
//
//	func main() {
//		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//		err := cli.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, cli.Options{Functions: myFunctions})
//		stop()
//		os.Exit(cli.ExitCode(os.Stderr, "mybinary", err)) // 0, 1, or 2 for a usage error
//	}
package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/comprehend"
	"github.com/asyncfn/asyncfn/dynamodb"
	asyncfnhttp "github.com/asyncfn/asyncfn/http"
	"github.com/asyncfn/asyncfn/metrics"
	"github.com/asyncfn/asyncfn/postgres"
)

// Commands lists the commands Main runs, for usage texts.
const Commands = `  serve    run the service: HTTP front end and workers (the default)
  worker   run workers only, on a store shared with front ends
  migrate  create or upgrade the store's schema, then exit
  dynamodb create-table --store dynamodb://TABLE: create a DynamoDB table with its indexes and TTL
  version  print the module version and the commit of this build`

// Options are what a binary built on Main serves, and the cross-cutting behaviour it adds
// to asyncfn's own (authentication, metrics, the status page, the flags' rate limits).
type Options struct {
	// Functions are the functions served.
	Functions []asyncfn.Function
	// FunctionMiddleware wraps every function, the first outermost, inside the rate
	// limits of --rate-limit.
	FunctionMiddleware []asyncfn.Middleware
	// HTTPMiddleware wraps serve's HTTP handler, the first outermost, inside
	// authentication and the request metrics (so a request refused for want of a key
	// never reaches it).
	HTTPMiddleware []func(http.Handler) http.Handler
	// Observers are told what the front end and the workers do, beside the metrics and
	// the status page.
	Observers []asyncfn.Observer
}

// Main runs the server command named by args[0] (serve when args is empty or starts with
// a flag) with the given functions. It returns when ctx is done (after a graceful
// shutdown) or on error: flag.ErrHelp when help was asked for (and printed), a
// *UsageError for a command line that cannot run. Secrets in the store's DSN are redacted
// from every message and log line. ExitCode turns the error into an exit status.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, opts Options) error {
	cmd, rest := "serve", args
	if len(args) > 0 && args[0] != "" && (args[0][0] != '-' || isHelpOrVersion(args[0])) {
		cmd, rest = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(ctx, rest, getenv, stdout, stderr, opts)
	case "worker":
		err = worker(ctx, rest, getenv, stdout, stderr, opts)
	case "migrate":
		err = migrate(ctx, rest, getenv, stdout, stderr)
	case "dynamodb":
		switch {
		case len(rest) > 0 && rest[0] == "create-table":
			err = createTable(ctx, rest[1:], getenv, stdout, stderr)
		case len(rest) > 0 && isHelp(rest[0]):
			fmt.Fprintln(stderr, "Usage: asyncfn dynamodb create-table --store dynamodb://TABLE?region=REGION   (asyncfn dynamodb create-table --help for its flags)")
			err = flag.ErrHelp
		default:
			err = Usagef("usage: asyncfn dynamodb create-table --store dynamodb://TABLE?region=REGION")
		}
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "asyncfn", Version())
	case "help", "-h", "-help", "--help":
		fmt.Fprintf(stdout, "Usage: asyncfn <command> [flags]   (asyncfn <command> --help for its flags)\n\nCommands:\n%s\n", Commands)
	default:
		err = UnknownCommand(cmd, Commands)
	}
	return redactError(err)
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

func isHelpOrVersion(arg string) bool {
	return isHelp(arg) || arg == "-version" || arg == "--version"
}

// plural says n things: 1 worker, 4 workers.
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// common are the flags of every process that opens the store and runs workers.
type common struct {
	store           string
	workers         int
	lease           time.Duration
	shutdownTimeout time.Duration
	sweepInterval   time.Duration
	timeout         time.Duration
	attempts        int
	backoff         time.Duration
	log             logFlags
	comprehend      comprehendFlags
	file            fileFlags
}

func (c *common) register(fs *flag.FlagSet, workersDefault int) {
	fs.StringVar(&c.store, "store", "asyncfn.db", storeHelp)
	fs.IntVar(&c.workers, "workers", workersDefault, "batches run at once by this process's workers (0: none, a front end only)")
	DurationVar(fs, &c.lease, "lease", 30*time.Second, "how long a worker's claim on a batch lasts without a heartbeat; a dead worker's batch is retried after it")
	DurationVar(fs, &c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long a shutdown waits for running batches before handing them back to the queue")
	DurationVar(fs, &c.sweepInterval, "sweep-interval", time.Minute, "how often expired batches are deleted")
	DurationVar(fs, &c.timeout, "function-timeout", asyncfn.DefaultTimeout, "how long one attempt of a function may run, for functions that do not set their own")
	fs.IntVar(&c.attempts, "max-attempts", asyncfn.DefaultMaxAttempts, "attempts per batch (retryable errors and dead workers count), for functions that do not set their own")
	DurationVar(fs, &c.backoff, "backoff", asyncfn.DefaultBackoff, "delay before a batch's first retry, doubled for each later one, for functions that do not set their own")
	c.log.register(fs)
	c.comprehend.register(fs)
	c.file.register(fs)
}

// prepare turns the parsed flags of a server command into its logger, API keys and
// registry (rate limits applied).
func (c *common) prepare(prod *production, getenv func(string) string, stderr io.Writer, opts Options) (*slog.Logger, []string, *asyncfn.Registry, error) {
	logger, err := c.log.logger(stderr)
	if err != nil {
		return nil, nil, nil, err
	}
	keys, err := prod.apiKeys(getenv)
	if err != nil {
		return nil, nil, nil, err
	}
	functions, err := c.comprehend.add(opts.Functions, logger)
	if err != nil {
		return nil, nil, nil, err
	}
	if functions, err = c.file.add(getenv, functions, logger); err != nil {
		return nil, nil, nil, err
	}
	reg, err := c.registry(functions, prod, opts)
	if err != nil {
		c.file.close(logger)
		return nil, nil, nil, err
	}
	return logger, keys, reg, nil
}

// checkFile does --check, against the functions this process would serve.
func (c *common) checkFile(getenv func(string) string, stdout io.Writer, opts Options) error {
	builtIn := opts.Functions
	if c.comprehend.enabled {
		builtIn = append(slices.Clip(builtIn), asyncfn.Function{Name: comprehend.Name})
	}
	return c.file.checkOnly(getenv, builtIn, stdout)
}

// observe adds the metrics of the functions that have their own (comprehend's, the
// functions file's) to the process's.
func (c *common) observe(m *metrics.Metrics) error {
	if err := c.comprehend.observe(m); err != nil {
		return err
	}
	if c.file.served == nil {
		return nil
	}
	for _, col := range c.file.served.Collectors {
		if err := m.Registry().Register(col); err != nil {
			return err
		}
	}
	return nil
}

// registry builds the registry of functions wrapped in the middleware and rate limits,
// filling settings the functions leave unset from flags.
func (c *common) registry(functions []asyncfn.Function, prod *production, opts Options) (*asyncfn.Registry, error) {
	functions, err := prod.limit(asyncfn.Wrap(functions, opts.FunctionMiddleware...))
	if err != nil {
		return nil, err
	}
	switch {
	case c.timeout <= 0:
		return nil, Usagef("--function-timeout must be positive")
	case c.attempts <= 0:
		return nil, Usagef("--max-attempts must be positive")
	case c.backoff <= 0:
		return nil, Usagef("--backoff must be positive")
	case c.workers < 0:
		return nil, Usagef("--workers must not be negative")
	}
	fns := make([]asyncfn.Function, len(functions))
	for i, f := range functions {
		fns[i] = f.Defaulted(asyncfn.Function{Timeout: c.timeout, MaxAttempts: c.attempts, Backoff: c.backoff})
	}
	return asyncfn.NewRegistry(fns...)
}

// runtime builds the parts of the process over store, reporting to obs.
func (c *common) runtime(store asyncfn.Store, reg *asyncfn.Registry, logger *slog.Logger, svc asyncfn.ServiceConfig, obs asyncfn.Observer) (*asyncfn.Runtime, error) {
	if c.sweepInterval <= 0 {
		return nil, Usagef("--sweep-interval must be positive")
	}
	rc := asyncfn.DefaultRuntimeConfig()
	rc.Service, rc.Workers, rc.SweepInterval, rc.Observer = svc, c.workers, c.sweepInterval, obs
	rc.Pool.Lease, rc.Pool.ShutdownTimeout = c.lease, c.shutdownTimeout
	rc.Service.Exclusive = exclusive(c.store)
	return asyncfn.NewRuntime(store, reg, logger, rc)
}

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, opts Options) error {
	fs := newFlagSet("serve", "Runs the asynchronous remote service: the HTTP front end that Snowflake calls, and workers.", stderr)
	var c common
	c.register(fs, asyncfn.DefaultPoolConfig().Concurrency)
	svcCfg := asyncfn.DefaultServiceConfig()
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on (host:port; port 0 picks a free one)")
	maxBody := fs.Int64("max-body-bytes", asyncfnhttp.DefaultMaxBodyBytes, "largest request body accepted, after decompression")
	maxInflight := fs.Int64("max-inflight-bytes", asyncfnhttp.DefaultMaxInflightBytes(machineMemory()),
		"bytes of request bodies read and decoded at once, across requests, past which a POST is answered 429 (Snowflake retries); default: a thirty-second of the machine's (or container's) memory, from 64 MB to 256 MB")
	DurationVar(fs, &svcCfg.SyncWait, "sync-wait", svcCfg.SyncWait, "how long a POST waits for its batch to finish and answer 200 at once (0: answer 202 at once)")
	DurationVar(fs, &svcCfg.PollWait, "poll-wait", svcCfg.PollWait, "how long a GET of an unfinished batch is held open before answering 202 (0: at once); keep below the proxy's timeout")
	fs.IntVar(&svcCfg.MaxQueued, "max-queued", svcCfg.MaxQueued, "queued batches past which a POST of a new batch is answered 429")
	DurationVar(fs, &svcCfg.Retention, "retention", svcCfg.Retention, "how long a batch whose answer is never collected is kept")
	DurationVar(fs, &svcCfg.Grace, "grace", svcCfg.Grace, "how long an answer is kept after it was first served, for a retried GET")
	var prod production
	prod.register(fs, true)
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	if c.file.check {
		return c.checkFile(getenv, stdout, opts)
	}
	logger, keys, reg, err := c.prepare(&prod, getenv, stderr, opts)
	if err != nil {
		return err
	}
	defer c.file.close(logger) // deferred before the runtime's Stop: runs after it
	if err := svcCfg.Validate(); err != nil {
		return Usagef("--%w", err)
	}
	if err := checkStore(c.store); err != nil {
		return err
	}
	// Listen before opening the store: a port in use fails before a store file is made.
	ln, err := listen("--addr", *addr, keys, prod.insecure)
	if err != nil {
		return err
	}
	defer ln.Close()
	metricsLn, err := prod.listenMetrics(keys)
	if err != nil {
		return err
	}
	if metricsLn != nil {
		defer metricsLn.Close()
	}
	if *maxInflight < *maxBody {
		return fmt.Errorf("--max-inflight-bytes %d must be at least --max-body-bytes %d, or no body of the largest size could ever be read", *maxInflight, *maxBody)
	}
	store, err := openStore(ctx, c.store, logger)
	if err != nil {
		return err
	}
	defer store.Close()
	m, rec, store, obs := prod.observe(reg, store, true)
	if err := c.observe(m); err != nil {
		return err
	}
	routes, err := prod.routes(reg, m, rec, logger)
	if err != nil {
		return err
	}
	rt, err := c.runtime(store, reg, logger, svcCfg, asyncfn.Observers(append([]asyncfn.Observer{obs}, opts.Observers...)...))
	if err != nil {
		return err
	}
	var handler http.Handler = asyncfnhttp.NewHandler(rt.Service(), logger, asyncfnhttp.Config{MaxBodyBytes: *maxBody, MaxInflightBytes: *maxInflight, Routes: routes})
	for i := len(opts.HTTPMiddleware) - 1; i >= 0; i-- {
		handler = opts.HTTPMiddleware[i](handler)
	}
	handler = protect(handler, m, keys, logger)

	rt.Start(ctx)
	defer rt.Stop()
	fmt.Fprintf(stdout, "asyncfn: serving %s on http://%s (store %s, %s)\n", asyncfnhttp.Routes(reg), ln.Addr(), redact(c.store), plural(c.workers, "worker"))
	if metricsLn != nil {
		fmt.Fprintf(stdout, "asyncfn: metrics on http://%s/metrics\n", metricsLn.Addr())
	}
	defer serveMetrics(ctx, metricsLn, m, keys, logger)()
	return serveHTTP(ctx, ln, handler, svcCfg.PollWait, logger)
}

// serveHTTP serves until ctx is done, then shuts down: it stops accepting connections,
// answers held polls at once (202: Snowflake polls again, elsewhere or after the restart)
// and waits for requests in flight.
func serveHTTP(ctx context.Context, ln net.Listener, handler http.Handler, pollWait time.Duration, logger *slog.Logger) error {
	requests, cancelRequests := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRequests()
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		WriteTimeout:      pollWait + 2*time.Minute,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return requests },
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	cancelRequests()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting down the HTTP server: %w", err)
	}
	return nil
}

func worker(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, opts Options) error {
	fs := newFlagSet("worker", "Runs workers only, on a store shared with front ends (asyncfn serve --workers 0).", stderr)
	var c common
	c.register(fs, asyncfn.DefaultPoolConfig().Concurrency)
	addr := fs.String("addr", "", "address for /healthz and /readyz (empty: no HTTP at all)")
	var prod production
	prod.register(fs, false)
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	if c.file.check {
		return c.checkFile(getenv, stdout, opts)
	}
	if c.workers <= 0 {
		return Usagef("--workers must be positive for a worker process")
	}
	logger, keys, reg, err := c.prepare(&prod, getenv, stderr, opts)
	if err != nil {
		return err
	}
	defer c.file.close(logger) // deferred before the runtime's Stop: runs after it
	if err := checkStore(c.store); err != nil {
		return err
	}
	// Listen before opening the store: a port in use fails before a store file is made.
	var ln net.Listener
	if *addr != "" {
		// /healthz and /readyz tell nothing secret: open to load balancers, as on serve.
		if ln, err = listen("--addr", *addr, nil, true); err != nil {
			return err
		}
		defer ln.Close()
	}
	metricsLn, err := prod.listenMetrics(keys)
	if err != nil {
		return err
	}
	if metricsLn != nil {
		defer metricsLn.Close()
	}
	store, err := openStore(ctx, c.store, logger)
	if err != nil {
		return err
	}
	defer store.Close()
	m, _, store, obs := prod.observe(reg, store, false)
	if err := c.observe(m); err != nil {
		return err
	}
	announceMetrics := func() {
		if metricsLn != nil {
			fmt.Fprintf(stdout, "asyncfn: metrics on http://%s/metrics\n", metricsLn.Addr())
		}
	}
	rt, err := c.runtime(store, reg, logger, asyncfn.DefaultServiceConfig(), asyncfn.Observers(append([]asyncfn.Observer{obs}, opts.Observers...)...))
	if err != nil {
		return err
	}
	rt.Start(ctx)
	defer rt.Stop()
	defer serveMetrics(ctx, metricsLn, m, keys, logger)()
	if ln == nil {
		fmt.Fprintf(stdout, "asyncfn: worker running %s (store %s, %d at once)\n", asyncfnhttp.Routes(reg), redact(c.store), c.workers)
		announceMetrics()
		<-ctx.Done()
		logger.Info("shutting down")
		return nil
	}
	fmt.Fprintf(stdout, "asyncfn: worker running %s (store %s, %d at once), health on http://%s\n", asyncfnhttp.Routes(reg), redact(c.store), c.workers, ln.Addr())
	announceMetrics()
	return serveHTTP(ctx, ln, asyncfnhttp.HealthHandler(store, logger), 0, logger)
}

func migrate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("migrate", "Creates or upgrades the store's schema, then exits (serve and worker also do it at start).", stderr)
	spec := fs.String("store", "asyncfn.db", storeHelp)
	var log logFlags
	log.register(fs)
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	logger, err := log.logger(stderr)
	if err != nil {
		return err
	}
	if err := checkStore(*spec); err != nil {
		return err
	}
	if isPostgres(*spec) {
		if err = postgres.Migrate(ctx, *spec, postgres.Options{Logger: logger}); err != nil {
			err = fmt.Errorf("--store %s: %w", redact(*spec), err)
		}
	} else {
		var store asyncfn.Store
		if store, err = openStore(ctx, *spec, logger); err == nil {
			err = store.Close()
		}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "asyncfn: the store %s is ready\n", redact(*spec))
	return nil
}

func createTable(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dynamodb create-table", "Creates the DynamoDB table of a dynamodb:// store, with its indexes and TTL, and waits until it is active.", stderr)
	spec := fs.String("store", "", "the table: dynamodb://TABLE?region=REGION&endpoint=URL (required)")
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	if !strings.HasPrefix(*spec, "dynamodb://") {
		return Usagef("--store %s: give the table as dynamodb://TABLE?region=REGION", *spec)
	}
	store, err := dynamodb.Open(ctx, *spec, dynamodb.Options{Logger: slog.New(slog.NewTextHandler(stderr, nil))})
	if err != nil {
		return fmt.Errorf("--store %s: %w", redact(*spec), err)
	}
	defer store.Close()
	if err := store.CreateTable(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "asyncfn: created the table of %s\n", redact(*spec))
	return nil
}
