package caller

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// BenchConfig is a load test: Config says what to call (MaxBatchRows is the rows per
// batch, Concurrency the batches in flight), and the fields below how much.
type BenchConfig struct {
	Config
	// Batches to send; 0 sends until Duration is over.
	Batches int
	// Duration stops starting batches after this long; 0 means no limit. Batches in
	// flight then finish.
	Duration time.Duration
	// Rows are sent in turn, MaxBatchRows per batch, over and over; nil sends synthetic
	// text rows.
	Rows []Row
}

// BenchResult is what a load test measured.
type BenchResult struct {
	URL          string `json:"url"`
	RowsPerBatch int    `json:"rows_per_batch"`
	Concurrency  int    `json:"concurrency"`
	Summary
	// FirstErrors holds up to a few distinct error messages.
	FirstErrors []string `json:"first_errors,omitempty"`
}

// Report writes the result as text for people.
func (r BenchResult) Report() string {
	s := fmt.Sprintf("target        %s\nload          %d rows per batch, concurrency %d\n%s", r.URL, r.RowsPerBatch, r.Concurrency, r.Summary.Report())
	for _, e := range r.FirstErrors {
		s += "error         " + e + "\n"
	}
	return s
}

// Bench sends batches as Snowflake would, Concurrency at a time, with every check of the
// answer, and measures throughput and latency; a failed batch is counted, not fatal,
// except one refused before the service ever answered (ErrRefused): there is nothing to
// measure. Payloads are built once, so the load generator spends its time on the requests.
func Bench(ctx context.Context, cfg BenchConfig) (BenchResult, error) {
	if cfg.Batches < 0 || cfg.Duration < 0 {
		return BenchResult{}, errors.New("the batches and duration must not be negative")
	}
	if cfg.Batches == 0 && cfg.Duration == 0 {
		return BenchResult{}, errors.New("set a number of batches, a duration or both")
	}
	client, err := NewClient(cfg.Config)
	if err != nil {
		return BenchResult{}, err
	}
	cfg.Config = client.Config()
	rows := cfg.Rows
	if rows == nil {
		rows = SyntheticRows(cfg.MaxBatchRows)
	}
	if len(rows) == 0 {
		return BenchResult{}, errors.New("no rows to send")
	}
	var payloads []Payload
	for start := 0; start < len(rows); start += cfg.MaxBatchRows {
		p, err := client.Encode(rows[start:min(start+cfg.MaxBatchRows, len(rows))])
		if err != nil {
			return BenchResult{}, err
		}
		payloads = append(payloads, p)
	}

	stop := make(chan struct{})
	if cfg.Duration > 0 {
		t := time.AfterFunc(cfg.Duration, func() { close(stop) })
		defer t.Stop()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		next    atomic.Int64
		mu      sync.Mutex
		stats   Stats
		errs    []string
		workers sync.WaitGroup
	)
	start := time.Now()
	for range cfg.Concurrency {
		workers.Go(func() {
			for {
				n := int(next.Add(1)) - 1
				if cfg.Batches > 0 && n >= cfg.Batches {
					return
				}
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				p := payloads[n%len(payloads)]
				a, err := client.Call(ctx, p)
				if errors.Is(err, ErrRefused) {
					cancel(err)
				}
				if errors.Is(err, ErrCanceled) || errors.Is(err, ErrRefused) {
					return
				}
				mu.Lock()
				stats.Add(a, err, p.Rows)
				if err != nil && len(errs) < 5 && !containsMessage(errs, err) {
					errs = append(errs, err.Error())
				}
				mu.Unlock()
			}
		})
	}
	workers.Wait()
	if ctx.Err() != nil {
		return BenchResult{}, context.Cause(ctx)
	}
	return BenchResult{
		URL:          cfg.URL,
		RowsPerBatch: cfg.MaxBatchRows,
		Concurrency:  cfg.Concurrency,
		Summary:      stats.Summary(time.Since(start)),
		FirstErrors:  errs,
	}, nil
}

// containsMessage reports whether a batch error with the same message, batch id aside,
// is already among msgs.
func containsMessage(msgs []string, err error) bool {
	var be *BatchError
	text := err.Error()
	if errors.As(err, &be) {
		text = be.Message()
	}
	for _, m := range msgs {
		if strings.HasSuffix(m, text) {
			return true
		}
	}
	return false
}

// syntheticTexts are review-like sentences, so a sentiment function has work to do.
var syntheticTexts = []string{
	"I love this product, it works perfectly and arrived early.",
	"Terrible experience: the package was late and the box was damaged.",
	"It is fine. Nothing special, but it does what it says.",
	"Absolutely fantastic support team, they solved my problem in minutes!",
	"Not worth the money; it broke after two days of normal use.",
	"The colour is a bit different from the picture, otherwise good.",
	"Would buy again. Five stars.",
	"I am disappointed, the instructions were confusing and incomplete.",
}

// SyntheticRows returns n one-argument rows of short review-like texts, each different.
func SyntheticRows(n int) []Row {
	rows := make([]Row, n)
	for i := range rows {
		rows[i] = Row{TextValue("#" + strconv.Itoa(i) + " " + syntheticTexts[i%len(syntheticTexts)])}
	}
	return rows
}
