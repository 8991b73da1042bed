package ratelimit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/memory"
	"github.com/asyncfn/asyncfn/ratelimit"
)

// calls records when a function was called, and with how many rows.
type calls struct {
	mu    sync.Mutex
	times []time.Time
	rows  []int
}

func (c *calls) record(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.times = append(c.times, time.Now())
	c.rows = append(c.rows, n)
}

func (c *calls) fn() asyncfn.Func {
	return asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
		c.record(len(rows))
		out := make([]any, len(rows))
		for i, r := range rows {
			out[i] = r.Number
		}
		return out, nil
	})
}

// measured runs fn while a probe measures how late timers fire, which is how late a
// limiter's waits may end under the machine's current load (the race detector, other
// packages' tests), and returns that lateness.
func measured(fn func()) time.Duration {
	stop, done := make(chan struct{}), make(chan struct{})
	var late time.Duration
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			time.Sleep(time.Millisecond)
			late = max(late, time.Since(t0)-time.Millisecond)
		}
	}()
	fn()
	close(stop)
	<-done
	return late
}

// checkRate checks that events (calls, or rows with their weights) recorded by a
// function limited to rate r with bursts of b were never faster, two ways:
//
//   - cumulatively: by each event's time t, the events so far weigh at most
//     b + r*(t - start), start being when the limiter was made (full). Late wake-ups only
//     move events later, so this bound is exact whatever the load.
//   - in sliding windows of each length in ws, starting at every event (so no burst goes
//     unseen): at most b + r*w, plus one, plus r times the slack a wait may end late
//     (25 ms, or the lateness measured while the events were recorded): a late call
//     bunches with the next, on time, one.
func checkRate(t *testing.T, start time.Time, late time.Duration, times []time.Time, weights []int, r float64, b int, ws ...time.Duration) {
	t.Helper()
	type ev struct {
		at time.Time
		n  int
	}
	evs := make([]ev, len(times))
	for i := range times {
		evs[i] = ev{times[i], weights[i]}
	}
	slices.SortFunc(evs, func(a, b ev) int { return a.at.Compare(b.at) })
	sum := 0
	for _, e := range evs {
		sum += e.n
		if limit := float64(b) + r*e.at.Sub(start).Seconds() + 1; float64(sum) > limit {
			t.Errorf("%d calls (rows) %s after the start, more than a rate of %g/s with bursts of %d allows (%g)", sum, e.at.Sub(start), r, b, limit)
			break
		}
	}
	slack := max(25*time.Millisecond, late)
	for _, w := range ws {
		limit := float64(b) + r*(w+slack).Seconds() + 1
		worst := 0
		for i := range evs {
			sum := 0
			for j := i; j < len(evs) && evs[j].at.Sub(evs[i].at) < w; j++ {
				sum += evs[j].n
			}
			worst = max(worst, sum)
		}
		if float64(worst) > limit {
			t.Errorf("%d calls (rows) within %s, more than a rate of %g/s with bursts of %d allows (%g, with %s for late wake-ups)", worst, w, r, b, limit, slack)
		}
		t.Logf("at most %d within any %s (allowed %g; timers were up to %s late)", worst, w, limit, late)
	}
}

// TestCallsNeverFaster: many batches at once on a function limited to N calls per
// second: it is never called faster, measured over the run.
func TestCallsNeverFaster(t *testing.T) {
	const perSecond, burst, total = 40.0, 4, 60
	var c calls
	began := time.Now()
	f := ratelimit.Calls(c.fn(), rate.NewLimiter(perSecond, burst))
	late := measured(func() {
		var wg sync.WaitGroup
		for i := range total {
			wg.Go(func() {
				if _, err := f.Call(context.Background(), []asyncfn.Row{{Number: 0}}); err != nil {
					t.Errorf("call %d: %v", i, err)
				}
			})
		}
		wg.Wait()
	})
	elapsed := time.Since(began)
	if len(c.times) != total {
		t.Fatalf("%d calls, want %d", len(c.times), total)
	}
	ones := make([]int, total)
	for i := range ones {
		ones[i] = 1
	}
	checkRate(t, began, late, c.times, ones, perSecond, burst, 100*time.Millisecond, 250*time.Millisecond, time.Second)
	// The whole run cannot be faster than the bucket allows either.
	if min := time.Duration(float64(total-burst) / perSecond * float64(time.Second)); elapsed < min*95/100 {
		t.Errorf("%d calls took %s, less than the %s a rate of %g/s allows", total, elapsed, min, perSecond)
	}
}

// TestRowsNeverFaster: a function limited to N rows per second gets big batches in
// chunks of at most the burst, never more rows per second than the limit.
func TestRowsNeverFaster(t *testing.T) {
	const perSecond, burst = 200.0, 20
	var c calls
	began := time.Now()
	f := ratelimit.Rows(c.fn(), rate.NewLimiter(perSecond, burst))
	var wg sync.WaitGroup
	late := measured(func() {
		for b := range 6 {
			wg.Go(func() {
				rows := make([]asyncfn.Row, 50+b)
				for i := range rows {
					rows[i].Number = i
				}
				out, err := f.Call(context.Background(), rows)
				if err != nil {
					t.Errorf("batch %d: %v", b, err)
					return
				}
				for i, v := range out {
					if v != i {
						t.Errorf("batch %d: row %d answered %v: the chunks' answers are out of order", b, i, v)
						return
					}
				}
			})
		}
		wg.Wait()
	})
	for _, n := range c.rows {
		if n > burst {
			t.Errorf("the function got a chunk of %d rows, more than the burst of %d", n, burst)
		}
	}
	checkRate(t, began, late, c.times, c.rows, perSecond, burst, 100*time.Millisecond, 500*time.Millisecond)
}

// TestPerRow: PerRow waits for a token per row and keeps the rows' order.
func TestPerRow(t *testing.T) {
	var mu sync.Mutex
	var times []time.Time
	began := time.Now()
	f := ratelimit.PerRow(rate.NewLimiter(100, 2), func(ctx context.Context, args []json.RawMessage) (any, error) {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		return string(args[0]), nil
	})
	rows := make([]asyncfn.Row, 30)
	for i := range rows {
		rows[i] = asyncfn.Row{Number: i, Args: []json.RawMessage{json.RawMessage(fmt.Sprint(i))}}
	}
	var out []any
	var err error
	late := measured(func() { out, err = f.Call(context.Background(), rows) })
	if err != nil || len(out) != 30 || out[29] != "29" {
		t.Fatalf("PerRow: %v %v", out, err)
	}
	ones := slices.Repeat([]int{1}, len(times))
	checkRate(t, began, late, times, ones, 100, 2, 100*time.Millisecond)
}

// TestWaitPastDeadline: a wait that cannot end within the function's time is a
// retryable error (tried again after a backoff), not a timeout that fails the batch.
func TestWaitPastDeadline(t *testing.T) {
	l := rate.NewLimiter(1, 1)
	l.Allow() // the bucket is empty: the next token comes in a second
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var c calls
	_, err := ratelimit.Calls(c.fn(), l).Call(ctx, []asyncfn.Row{{}})
	if e := asyncfn.AsError(err); err == nil || e.Kind != asyncfn.Retryable {
		t.Errorf("got %v, want a retryable error", err)
	}
	if len(c.times) != 0 {
		t.Errorf("the function was called")
	}
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if err := ratelimit.Wait(cctx, l); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait on a cancelled context: %v, want context.Canceled (shutdown hands the batch back)", err)
	}
}

func TestParseLimit(t *testing.T) {
	for in, want := range map[string]ratelimit.Limit{
		"sentiment=100":    {Function: "sentiment", Rate: 100, Burst: 100},
		"geo=2.5:10":       {Function: "geo", Rate: 2.5, Burst: 10},
		"slow=0.2":         {Function: "slow", Rate: 0.2, Burst: 1},
		"a.b-c_d=1000:500": {Function: "a.b-c_d", Rate: 1000, Burst: 500},
	} {
		got, err := ratelimit.ParseLimit(in)
		if err != nil || got != want {
			t.Errorf("ParseLimit(%q) = %+v, %v, want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "sentiment", "=5", "x=", "x=0", "x=-1", "x=abc", "x=5:0", "x=5:1.5", "x=5:"} {
		if _, err := ratelimit.ParseLimit(in); err == nil {
			t.Errorf("ParseLimit(%q) succeeded, want an error", in)
		}
	}
}

// TestApplyThroughThePool: a limit applied by name holds when the worker pool runs many
// batches of the function at once.
func TestApplyThroughThePool(t *testing.T) {
	const perSecond, burst = 100.0, 10
	var c calls
	began := time.Now()
	fns, err := ratelimit.Apply([]asyncfn.Function{{Name: "api", Func: c.fn()}, {Name: "echo", Func: asyncfn.Echo}},
		[]ratelimit.Limit{{Function: "api", Rate: perSecond, Burst: burst}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ratelimit.Apply(fns, []ratelimit.Limit{{Function: "nope", Rate: 1, Burst: 1}}); err == nil {
		t.Errorf("Apply of a limit for an unknown function succeeded")
	}
	reg, err := asyncfn.NewRegistry(fns...)
	if err != nil {
		t.Fatal(err)
	}
	store, logger := memory.New(), slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := asyncfn.DefaultRuntimeConfig()
	cfg.Service.SyncWait, cfg.Workers = 0, 8
	rt, err := asyncfn.NewRuntime(store, reg, logger, cfg)
	if err != nil {
		t.Fatal(err)
	}
	svc := rt.Service()
	ctx := context.Background()
	rt.Start(ctx)
	defer rt.Stop()
	const batches, rowsPer = 8, 25
	for b := range batches {
		payload := `{"data":[`
		for i := range rowsPer {
			if i > 0 {
				payload += ","
			}
			payload += fmt.Sprintf("[%d,%d]", i, i)
		}
		payload += "]}"
		rows, err := asyncfn.ParseRows([]byte(payload))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Accept(ctx, asyncfn.Request{Key: asyncfn.Key{Function: "api", BatchID: fmt.Sprint(b)}, Payload: []byte(payload), Rows: rows}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	late := measured(func() {
		for done := 0; done < batches; {
			if time.Now().After(deadline) {
				t.Fatalf("only %d of %d batches done in 30s", done, batches)
			}
			time.Sleep(20 * time.Millisecond)
			done = 0
			for b := range batches {
				if bt, err := store.Get(ctx, asyncfn.Key{Function: "api", BatchID: fmt.Sprint(b)}, time.Now(), false); err == nil && bt.State == asyncfn.Succeeded {
					done++
				} else if err == nil && bt.State == asyncfn.Failed {
					t.Fatalf("batch %d failed: %v", b, bt.Error)
				}
			}
		}
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	total := 0
	for _, n := range c.rows {
		total += n
	}
	if total != batches*rowsPer {
		t.Errorf("the function got %d rows, want %d", total, batches*rowsPer)
	}
	checkRate(t, began, late, c.times, c.rows, perSecond, burst, 500*time.Millisecond, time.Second)
}
