package asyncfn

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"time"
)

// Row is one input row: its 0-based number in the batch and its arguments as the JSON
// Snowflake sent (numbers keep their precision; NULL is the JSON null).
type Row struct {
	Number int
	Args   []json.RawMessage
}

// Func is the user's code: it maps a batch of rows to one value per row.
//
// Call returns exactly len(rows) values, in row order; each is encoded with encoding/json
// (a json.RawMessage is sent as it is, nil as NULL). To reject the input, return an error
// made by InvalidInputf; to ask for another attempt later, wrap the error with
// RetryableError; any other error, a panic or running past the timeout fails the batch.
// ctx is cancelled at the function's timeout and when the service shuts down.
type Func interface {
	Call(ctx context.Context, rows []Row) ([]any, error)
}

// FuncOf adapts a plain function to Func.
type FuncOf func(ctx context.Context, rows []Row) ([]any, error)

// Call calls f.
func (f FuncOf) Call(ctx context.Context, rows []Row) ([]any, error) { return f(ctx, rows) }

// PerRow adapts a function of one row's arguments to Func; an error for any row fails the
// batch (wrapped with the row number when it is an InvalidInput error).
func PerRow(fn func(ctx context.Context, args []json.RawMessage) (any, error)) Func {
	return FuncOf(func(ctx context.Context, rows []Row) ([]any, error) {
		out := make([]any, len(rows))
		for i, r := range rows {
			v, err := fn(ctx, r.Args)
			if err != nil {
				if e := AsError(err); e.Kind == InvalidInput {
					return nil, InvalidInputf("row %d: %s", r.Number, e.Message)
				}
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	})
}

// Function is a Func with its route and settings.
type Function struct {
	// Name is the route: the function answers at /Name. Letters, digits, '-', '_' and '.'.
	Name string
	Func Func
	// Description tells people what the function runs, such as an upstream's URL or a
	// command, for the status page. It must hold no secret. Default empty.
	Description string
	// Timeout bounds one attempt. Default 5 minutes (Snowflake gives up on an external
	// function's batch 10 minutes after it starts polling).
	Timeout time.Duration
	// Concurrency caps the batches of this function running at once in one process.
	// Default 0: limited only by the worker pool.
	Concurrency int
	// MaxAttempts is how many times a batch is tried (retryable errors and dead workers
	// both count). Default 3.
	MaxAttempts int
	// Backoff is the delay before the second attempt, doubled for each later one.
	// Default 1 second.
	Backoff time.Duration
	// Checkpoint says how often the rows a function reports with RowDone are saved while
	// its batch runs. Default none: RowDone does nothing.
	Checkpoint CheckpointConfig
}

// CheckpointConfig says when the rows answered so far (RowDone) are saved (Store.Checkpoint),
// so that an attempt after a crash, a lost lease or a shutdown calls the function only for
// the others. Rows wait in memory until then: a shorter interval loses less work to a
// crash, at one store write each. The zero value saves nothing.
type CheckpointConfig struct {
	// Rows saves as soon as this many rows wait; 0: only every Interval.
	Rows int
	// Interval saves rows that wait at least this often; 0: only every Rows rows.
	Interval time.Duration
}

// DefaultCheckpoint is the setting of a function that calls an API once per row: at most
// 100 rows or 5 seconds of calls are lost to a crash, for at most one store write per
// 100 rows or 5 seconds.
var DefaultCheckpoint = CheckpointConfig{Rows: 100, Interval: 5 * time.Second}

// Enabled reports whether rows are saved at all.
func (c CheckpointConfig) Enabled() bool { return c.Rows > 0 || c.Interval > 0 }

// Function defaults.
const (
	DefaultTimeout     = 5 * time.Minute
	DefaultMaxAttempts = 3
	DefaultBackoff     = time.Second
)

var validName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// CheckName returns an error if name cannot be a function's route.
func CheckName(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("function name %q: use letters, digits, '-', '_' and '.'", name)
	}
	return nil
}

// withDefaults returns f with zero settings replaced by their defaults, or an error naming
// the bad field.
func (f Function) withDefaults() (Function, error) {
	if err := CheckName(f.Name); err != nil {
		return f, err
	}
	switch {
	case f.Func == nil:
		return f, fmt.Errorf("function %q: Func is nil", f.Name)
	case f.Timeout < 0 || f.Concurrency < 0 || f.MaxAttempts < 0 || f.Backoff < 0 || f.Checkpoint.Rows < 0 || f.Checkpoint.Interval < 0:
		return f, fmt.Errorf("function %q: Timeout, Concurrency, MaxAttempts, Backoff and Checkpoint must not be negative", f.Name)
	}
	if f.Timeout == 0 {
		f.Timeout = DefaultTimeout
	}
	if f.MaxAttempts == 0 {
		f.MaxAttempts = DefaultMaxAttempts
	}
	if f.Backoff == 0 {
		f.Backoff = DefaultBackoff
	}
	return f, nil
}

// Defaulted returns f with its unset Timeout, MaxAttempts and Backoff taken from d: how a
// binary's settings apply to the functions that do not choose their own.
func (f Function) Defaulted(d Function) Function {
	if f.Timeout == 0 {
		f.Timeout = d.Timeout
	}
	if f.MaxAttempts == 0 {
		f.MaxAttempts = d.MaxAttempts
	}
	if f.Backoff == 0 {
		f.Backoff = d.Backoff
	}
	return f
}

// BackoffFor returns the delay before attempt number next (2 for the first retry).
func (f Function) BackoffFor(next int) time.Duration {
	d := f.Backoff
	for i := 2; i < next && d < time.Hour; i++ {
		d *= 2
	}
	return d
}

// Registry maps routes to functions. Build it before serving; it is read-only afterwards.
type Registry struct {
	funcs map[string]Function
}

// NewRegistry returns a registry of the given functions, with defaults applied.
func NewRegistry(fns ...Function) (*Registry, error) {
	r := &Registry{funcs: map[string]Function{}}
	for _, f := range fns {
		if err := r.Register(f); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Register adds f; a name registered twice is an error.
func (r *Registry) Register(f Function) error {
	f, err := f.withDefaults()
	if err != nil {
		return err
	}
	if _, dup := r.funcs[f.Name]; dup {
		return fmt.Errorf("function %q registered twice", f.Name)
	}
	r.funcs[f.Name] = f
	return nil
}

// Lookup returns the function at route name.
func (r *Registry) Lookup(name string) (Function, bool) {
	f, ok := r.funcs[name]
	return f, ok
}

// Names returns the registered routes, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.funcs))
	for n := range r.funcs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Echo is a function that returns each row's first argument as it came (NULL for a row
// without arguments): for tests, benchmarks and checking a deployment end to end.
var Echo Func = FuncOf(func(ctx context.Context, rows []Row) ([]any, error) {
	out := make([]any, len(rows))
	for i, r := range rows {
		if len(r.Args) > 0 {
			out[i] = r.Args[0]
		}
	}
	return out, nil
})

// Middleware wraps a function with cross-cutting behaviour (a rate limit, tracing): it
// returns the function to serve in its place, under the same Name. It is applied once,
// when the process starts, so it may hold state shared by all batches of the function.
type Middleware func(Function) Function

// Wrap returns fns with mws applied to each, the first of mws outermost.
func Wrap(fns []Function, mws ...Middleware) []Function {
	out := make([]Function, len(fns))
	for i, f := range fns {
		for j := len(mws) - 1; j >= 0; j-- {
			f = mws[j](f)
		}
		out[i] = f
	}
	return out
}
