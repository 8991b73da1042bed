package lambda

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/comprehend"
	asyncfnhttp "github.com/asyncfn/asyncfn/http"
)

// Config configures the Lambda function. LoadConfig reads it from the environment: each
// field names its variable (the same as `asyncfn serve`'s where they mean the same) and
// its default.
type Config struct {
	// Store is the DynamoDB table: dynamodb://TABLE (region from AWS_REGION, which Lambda
	// sets), or dynamodb://TABLE?region=R&endpoint=URL. ASYNCFN_STORE, required.
	Store string
	// WorkerFunction is the name or ARN of the function that worker events are sent to.
	// ASYNCFN_WORKER_FUNCTION, default AWS_LAMBDA_FUNCTION_NAME: this same function.
	WorkerFunction string
	// LambdaEndpoint replaces the Lambda API's endpoint for those invocations (an emulator
	// in tests). ASYNCFN_LAMBDA_ENDPOINT, default empty: AWS's.
	LambdaEndpoint string

	// SyncWait is how long a POST waits for its batch to finish and answer 200 at once.
	// ASYNCFN_SYNC_WAIT, default 0: the worker runs in another invocation, so a POST that
	// waited would be billed for waiting, and few batches finish before Snowflake's first
	// poll anyway.
	SyncWait time.Duration
	// PollWait is how long a GET of an unfinished batch is held open, so that Snowflake
	// gets the result when it is ready rather than after its growing poll interval. Each
	// held second is billed; API Gateway cuts requests at 29 s. ASYNCFN_POLL_WAIT,
	// default 5s.
	PollWait time.Duration
	// Stalled is how long a queued batch may wait for its worker before a request
	// dispatches it again (a lost or failed invocation). ASYNCFN_STALLED, default 10s.
	Stalled time.Duration
	// MaxQueued is the number of queued batches past which a POST of a new batch is
	// answered 429. ASYNCFN_MAX_QUEUED, default 1000.
	MaxQueued int
	// Retention is how long a batch whose answer is never collected is kept.
	// ASYNCFN_RETENTION, default 12h.
	Retention time.Duration
	// Grace is how long an answer is kept after it was first served. ASYNCFN_GRACE,
	// default 10m.
	Grace time.Duration
	// MaxBodyBytes bounds a request body after decompression (Lambda itself caps a
	// request at 6 MB). ASYNCFN_MAX_BODY_BYTES, default 16777216.
	MaxBodyBytes int64

	// Lease is how long a worker's claim lasts without a heartbeat: a batch whose worker
	// died is dispatched again after it. ASYNCFN_LEASE, default 30s.
	Lease time.Duration
	// FunctionTimeout bounds one attempt, for functions that set none. Keep it below the
	// Lambda function's timeout, so that the attempt fails cleanly before Lambda stops
	// the invocation. ASYNCFN_FUNCTION_TIMEOUT, default 5m.
	FunctionTimeout time.Duration
	// MaxAttempts is the attempts per batch, for functions that set none.
	// ASYNCFN_MAX_ATTEMPTS, default 3.
	MaxAttempts int
	// Backoff is the delay before a batch's first retry, for functions that set none.
	// ASYNCFN_BACKOFF, default 1s.
	Backoff time.Duration

	// LogFormat is json or text. ASYNCFN_LOG_FORMAT, default json (CloudWatch Logs
	// parses it).
	LogFormat string
	// LogLevel is the least severe level logged: debug, info, warn or error.
	// ASYNCFN_LOG_LEVEL, default info.
	LogLevel string

	// FunctionsFile is a functions file (package funcfile) whose functions are served
	// beside the built-in ones: http functions, whose upstream is reachable from the
	// Lambda function, and exec functions, whose command is in the deployment package.
	// ASYNCFN_CONFIG, as `asyncfn serve --config`; default empty: none.
	FunctionsFile string

	// Comprehend, when ASYNCFN_COMPREHEND is true, adds the function comprehend
	// (sentiment by Amazon Comprehend) with these settings, read from the variables of
	// `asyncfn serve --comprehend-*`: ASYNCFN_COMPREHEND_REGION, _ENDPOINT, _LANGUAGE,
	// _CONCURRENCY, _LABEL, _LONG_TEXT, _ROW_ERRORS, _MAX_ATTEMPTS, _MAX_BACKOFF and
	// _CALL_TIMEOUT (comprehend.Config documents them and their defaults). Default nil:
	// off, since AWS bills every call; the SAM template's Comprehend parameter turns it
	// on and grants the permission it needs.
	Comprehend *comprehend.Config
}

// LoadConfig reads the configuration from the environment through getenv. Errors name the
// variable at fault.
func LoadConfig(getenv func(string) string) (Config, error) {
	svc, pool := asyncfn.DefaultServiceConfig(), asyncfn.DefaultPoolConfig()
	c := Config{
		Store:           getenv("ASYNCFN_STORE"),
		WorkerFunction:  getenv("ASYNCFN_WORKER_FUNCTION"),
		LambdaEndpoint:  getenv("ASYNCFN_LAMBDA_ENDPOINT"),
		FunctionsFile:   getenv("ASYNCFN_CONFIG"),
		PollWait:        5 * time.Second, // shorter than a server's: each held second is billed
		Stalled:         svc.Stalled,
		MaxQueued:       svc.MaxQueued,
		Retention:       svc.Retention,
		Grace:           svc.Grace,
		MaxBodyBytes:    asyncfnhttp.DefaultMaxBodyBytes,
		Lease:           pool.Lease,
		FunctionTimeout: asyncfn.DefaultTimeout,
		MaxAttempts:     asyncfn.DefaultMaxAttempts,
		Backoff:         asyncfn.DefaultBackoff,
		LogFormat:       getenv("ASYNCFN_LOG_FORMAT"),
		LogLevel:        getenv("ASYNCFN_LOG_LEVEL"),
	}
	if c.WorkerFunction == "" {
		c.WorkerFunction = getenv("AWS_LAMBDA_FUNCTION_NAME")
	}
	if c.LogFormat == "" {
		c.LogFormat = "json"
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	var errs []error
	// duration reads a duration; only the waits may be 0.
	duration := func(name string, d *time.Duration, zeroOK bool) {
		if v := getenv(name); v != "" {
			parsed, err := time.ParseDuration(v)
			if err != nil || parsed < 0 || (parsed == 0 && !zeroOK) {
				errs = append(errs, fmt.Errorf("%s=%q: use a positive duration such as 500ms, 5s or 2m", name, v))
			}
			*d = parsed
		}
	}
	integer := func(name string, n *int64) {
		if v := getenv(name); v != "" {
			parsed, err := strconv.ParseInt(v, 10, 64)
			if err != nil || parsed <= 0 {
				errs = append(errs, fmt.Errorf("%s=%q: use a positive whole number", name, v))
			}
			*n = parsed
		}
	}
	maxQueued, maxAttempts := int64(c.MaxQueued), int64(c.MaxAttempts)
	duration("ASYNCFN_SYNC_WAIT", &c.SyncWait, true)
	duration("ASYNCFN_POLL_WAIT", &c.PollWait, true)
	duration("ASYNCFN_STALLED", &c.Stalled, false)
	integer("ASYNCFN_MAX_QUEUED", &maxQueued)
	duration("ASYNCFN_RETENTION", &c.Retention, false)
	duration("ASYNCFN_GRACE", &c.Grace, false)
	integer("ASYNCFN_MAX_BODY_BYTES", &c.MaxBodyBytes)
	duration("ASYNCFN_LEASE", &c.Lease, false)
	duration("ASYNCFN_FUNCTION_TIMEOUT", &c.FunctionTimeout, false)
	integer("ASYNCFN_MAX_ATTEMPTS", &maxAttempts)
	duration("ASYNCFN_BACKOFF", &c.Backoff, false)
	c.MaxQueued, c.MaxAttempts = int(maxQueued), int(maxAttempts)
	if v := getenv("ASYNCFN_COMPREHEND"); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("ASYNCFN_COMPREHEND=%q: use true or false", v))
		}
		if on {
			cc := comprehend.DefaultConfig()
			text := func(field string, s *string) {
				if v := getenv(comprehendVar(field)); v != "" {
					*s = v
				}
			}
			concurrency, attempts := int64(cc.Concurrency), int64(cc.MaxAttempts)
			text("region", &cc.Region)
			text("endpoint", &cc.Endpoint)
			text("language", &cc.Language)
			integer(comprehendVar("concurrency"), &concurrency)
			if v := getenv(comprehendVar("label")); v != "" {
				if cc.Label, err = strconv.ParseBool(v); err != nil {
					errs = append(errs, fmt.Errorf("%s=%q: use true or false", comprehendVar("label"), v))
				}
			}
			text("long-text", &cc.LongText)
			text("row-errors", &cc.RowErrors)
			integer(comprehendVar("max-attempts"), &attempts)
			duration(comprehendVar("max-backoff"), &cc.MaxBackoff, false)
			duration(comprehendVar("call-timeout"), &cc.CallTimeout, false)
			cc.Concurrency, cc.MaxAttempts = int(concurrency), int(attempts)
			// Checked once every variable parsed, so as not to report one twice.
			if err := cc.Validate(); err != nil && len(errs) == 0 {
				errs = append(errs, comprehendError(err))
			}
			c.Comprehend = &cc
		}
	}
	switch {
	case c.Store == "":
		errs = append(errs, errors.New("ASYNCFN_STORE is not set: give the DynamoDB table as dynamodb://TABLE"))
	case !strings.HasPrefix(c.Store, "dynamodb://"):
		errs = append(errs, fmt.Errorf("ASYNCFN_STORE=%q: on Lambda the store is a DynamoDB table, dynamodb://TABLE", c.Store))
	}
	if c.WorkerFunction == "" {
		errs = append(errs, errors.New("neither ASYNCFN_WORKER_FUNCTION nor AWS_LAMBDA_FUNCTION_NAME is set: name the worker function"))
	}
	if _, err := c.Logger(io.Discard); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

// comprehendVar is the environment variable of a comprehend.Config field, by the name
// comprehend.FieldError gives it.
func comprehendVar(field string) string {
	return "ASYNCFN_COMPREHEND_" + strings.ToUpper(strings.ReplaceAll(field, "-", "_"))
}

// comprehendError names the variable of a *comprehend.FieldError.
func comprehendError(err error) error {
	if fe := (*comprehend.FieldError)(nil); errors.As(err, &fe) {
		return fmt.Errorf("%s %s", comprehendVar(fe.Field), fe.Message)
	}
	return err
}

// Logger returns the logger the configuration asks for, writing to w.
func (c Config) Logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("ASYNCFN_LOG_LEVEL=%q: use debug, info, warn or error", c.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.LogFormat {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("ASYNCFN_LOG_FORMAT=%q: use json or text", c.LogFormat)
}

// New wires the function: the front end on store with a Dispatcher invoking the worker
// function, and a worker pool for worker events, serving functions and comprehend when
// cfg.Comprehend is set. Comprehend's calls and billed units are in each batch's log line,
// as the Lambda exposes no metrics. No background loop runs: Lambda freezes
// the process between invocations, so DynamoDB's TTL deletes what expires (and reads skip
// it until then) and polls re-dispatch what stalls.
func New(ctx context.Context, cfg Config, store asyncfn.Store, logger *slog.Logger, functions ...asyncfn.Function) (*Handler, error) {
	if cfg.Comprehend != nil {
		fn, err := comprehend.New(ctx, *cfg.Comprehend, logger)
		if err != nil {
			return nil, comprehendError(err)
		}
		functions = append(slices.Clip(functions), fn.Function())
	}
	fns := make([]asyncfn.Function, len(functions))
	for i, f := range functions {
		fns[i] = f.Defaulted(asyncfn.Function{Timeout: cfg.FunctionTimeout, MaxAttempts: cfg.MaxAttempts, Backoff: cfg.Backoff})
	}
	reg, err := asyncfn.NewRegistry(fns...)
	if err != nil {
		return nil, err
	}
	dispatcher, err := NewDispatcher(ctx, cfg.WorkerFunction, cfg.LambdaEndpoint)
	if err != nil {
		return nil, err
	}
	rc := asyncfn.DefaultRuntimeConfig()
	rc.Service.SyncWait, rc.Service.PollWait, rc.Service.Stalled = cfg.SyncWait, cfg.PollWait, cfg.Stalled
	rc.Service.MaxQueued, rc.Service.Retention, rc.Service.Grace = cfg.MaxQueued, cfg.Retention, cfg.Grace
	rc.Service.Dispatcher = dispatcher
	rc.Workers, rc.Pool.Lease = 1, cfg.Lease              // one worker event per invocation
	rc.SweepInterval = 0                                  // DynamoDB's TTL deletes what expires
	rt, err := asyncfn.NewRuntime(store, reg, logger, rc) // never started: see above
	if err != nil {
		return nil, err
	}
	return &Handler{
		HTTP:   asyncfnhttp.NewHandler(rt.Service(), logger, asyncfnhttp.Config{MaxBodyBytes: cfg.MaxBodyBytes}),
		Pool:   rt.Pool(),
		Logger: logger,
	}, nil
}
