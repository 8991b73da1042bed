// Package ratelimit keeps a function within the quota of the downstream service it calls
// (a throttled API, a database), however many batches arrive at once: calls wait for a
// token of a token bucket (golang.org/x/time/rate) shared by every batch of the function
// in the process.
//
// Limits are per process: with N processes running a function's batches, give each
// 1/N of the quota. Waiting counts against the function's timeout; a wait that cannot
// end before it becomes a retryable error, so the batch is tried again after its backoff
// instead of failing.
//
//	limiter := rate.NewLimiter(50, 10) // 50 calls per second, bursts of 10
//	fn := asyncfn.Function{Name: "geocode", Func: ratelimit.Rows(geocode, limiter)}
package ratelimit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/time/rate"

	"github.com/asyncfn/asyncfn"
)

// Calls limits the calls of f: each call (one batch, or one chunk of a batch) takes one
// token of l. Use it when the function makes one downstream request per batch.
func Calls(f asyncfn.Func, l *rate.Limiter) asyncfn.Func {
	return asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
		if err := wait(ctx, l, 1); err != nil {
			return nil, err
		}
		return f.Call(ctx, rows)
	})
}

// Rows limits the rows f is given per second: a batch is cut into chunks of at most
// l.Burst() rows, and each chunk waits for as many tokens as it has rows before f is
// called on it. Use it when the function makes one downstream request per row: at most
// Burst rows' requests are ever in flight ahead of the rate. f sees the chunks as
// batches of their own (row numbers are kept).
func Rows(f asyncfn.Func, l *rate.Limiter) asyncfn.Func {
	return asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
		chunk := max(l.Burst(), 1)
		if l.Limit() == rate.Inf {
			chunk = max(len(rows), 1)
		}
		out := make([]any, 0, len(rows))
		for start := 0; start < len(rows); start += chunk {
			part := rows[start:min(start+chunk, len(rows))]
			if err := wait(ctx, l, len(part)); err != nil {
				return nil, err
			}
			values, err := f.Call(ctx, part)
			if err != nil {
				return nil, err
			}
			if len(values) != len(part) {
				return nil, fmt.Errorf("the function returned %d values for %d rows", len(values), len(part))
			}
			out = append(out, values...)
		}
		return out, nil
	})
}

// PerRow is asyncfn.PerRow with each row's call waiting for a token of l.
func PerRow(l *rate.Limiter, fn func(ctx context.Context, args []json.RawMessage) (any, error)) asyncfn.Func {
	return asyncfn.PerRow(func(ctx context.Context, args []json.RawMessage) (any, error) {
		if err := wait(ctx, l, 1); err != nil {
			return nil, err
		}
		return fn(ctx, args)
	})
}

// Wait waits for one token of l, for functions that call their downstream service
// several times per row or batch; its error is the one to return from the function.
func Wait(ctx context.Context, l *rate.Limiter) error { return wait(ctx, l, 1) }

// wait takes n tokens, or returns a retryable error if ctx ends (or would end) first.
func wait(ctx context.Context, l *rate.Limiter, n int) error {
	err := l.WaitN(ctx, n)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return ctx.Err() // shutdown: the pool hands the batch back
	}
	return asyncfn.RetryableError(fmt.Errorf("the rate limit of the downstream service left no time to finish the batch (%v)", err))
}

// Limit is a rate limit parsed from a flag: Rate rows per second with bursts of Burst.
type Limit struct {
	Function string
	Rate     float64
	Burst    int
}

// ParseLimit parses "NAME=RATE[:BURST]" (rows per second; BURST defaults to RATE rounded
// up, at least 1), the syntax of the --rate-limit flag.
func ParseLimit(s string) (Limit, error) {
	name, spec, ok := strings.Cut(s, "=")
	if !ok || name == "" || spec == "" {
		return Limit{}, fmt.Errorf("%q: use FUNCTION=ROWS_PER_SECOND[:BURST], for example sentiment=100:20", s)
	}
	rateText, burstText, hasBurst := strings.Cut(spec, ":")
	r, err := strconv.ParseFloat(rateText, 64)
	if err != nil || r <= 0 || r > 1e9 {
		return Limit{}, fmt.Errorf("%q: the rate %q is not a positive number of rows per second", s, rateText)
	}
	lim := Limit{Function: name, Rate: r, Burst: max(int(r+0.999999), 1)}
	if hasBurst {
		b, err := strconv.Atoi(burstText)
		if err != nil || b <= 0 {
			return Limit{}, fmt.Errorf("%q: the burst %q is not a positive whole number", s, burstText)
		}
		lim.Burst = b
	}
	return lim, nil
}

// Middleware limits the rows per second of each function named in limits (Rows, with a
// limiter of its own shared by all its batches in the process); other functions pass
// through.
func Middleware(limits ...Limit) asyncfn.Middleware {
	byName := map[string]Limit{}
	for _, lim := range limits {
		byName[lim.Function] = lim
	}
	return func(f asyncfn.Function) asyncfn.Function {
		if lim, ok := byName[f.Name]; ok {
			f.Func = Rows(f.Func, rate.NewLimiter(rate.Limit(lim.Rate), lim.Burst))
		}
		return f
	}
}

// Apply wraps the functions named in limits with Middleware, and returns an error naming
// a limit whose function is not among fns.
func Apply(fns []asyncfn.Function, limits []Limit) ([]asyncfn.Function, error) {
	for _, lim := range limits {
		if !slices.ContainsFunc(fns, func(f asyncfn.Function) bool { return f.Name == lim.Function }) {
			return nil, fmt.Errorf("%s=%g:%d: no function is named %s", lim.Function, lim.Rate, lim.Burst, lim.Function)
		}
	}
	return asyncfn.Wrap(fns, Middleware(limits...)), nil
}
