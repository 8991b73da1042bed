package caller

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Stats accumulates batch answers into a Summary. The zero value is ready to use; it is
// not safe for concurrent use.
type Stats struct {
	batches, errors, retries int
	rows                     int64
	posts, polls, latencies  []time.Duration
}

// Add counts one batch of rows: its requests, retries and, if it succeeded, its rows and
// latency.
func (s *Stats) Add(a Answer, err error, rows int) {
	s.batches++
	s.retries += a.Stats.Retries
	s.posts = append(s.posts, a.Stats.Posts...)
	s.polls = append(s.polls, a.Stats.Gets...)
	if err != nil {
		s.errors++
		return
	}
	s.rows += int64(rows)
	s.latencies = append(s.latencies, a.Stats.Latency)
}

// Summary returns the totals and latency percentiles over elapsed.
func (s *Stats) Summary(elapsed time.Duration) Summary {
	sum := Summary{
		Batches: s.batches, Errors: s.errors, Rows: s.rows, Retries: s.retries, Polls: len(s.polls),
		Elapsed: elapsed, ElapsedSeconds: elapsed.Seconds(),
		POST: PercentilesOf(s.posts), GET: PercentilesOf(s.polls), Batch: PercentilesOf(s.latencies),
	}
	if s.batches > 0 {
		sum.PollsPerBatch = float64(len(s.polls)) / float64(s.batches)
	}
	if secs := elapsed.Seconds(); secs > 0 {
		sum.RowsPerSecond = float64(s.rows) / secs
		sum.BatchesPerSecond = float64(s.batches-s.errors) / secs
	}
	return sum
}

// Summary is what a run of batches took.
type Summary struct {
	Batches          int           `json:"batches"`
	Errors           int           `json:"errors"`
	Rows             int64         `json:"rows"` // of the batches that succeeded
	Retries          int           `json:"retries"`
	Polls            int           `json:"polls"`
	PollsPerBatch    float64       `json:"polls_per_batch"`
	Elapsed          time.Duration `json:"-"`
	ElapsedSeconds   float64       `json:"elapsed_seconds"`
	RowsPerSecond    float64       `json:"rows_per_second"`
	BatchesPerSecond float64       `json:"batches_per_second"`
	// POST and GET are over every request sent; Batch over each successful batch from
	// its first POST to its answer.
	POST  Percentiles `json:"post_latency"`
	GET   Percentiles `json:"get_latency"`
	Batch Percentiles `json:"batch_latency"`
}

// Percentiles of a set of latencies, nearest-rank.
type Percentiles struct {
	Count              int
	P50, P90, P99, Max time.Duration
}

// PercentilesOf returns the percentiles of d, which it sorts.
func PercentilesOf(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	slices.Sort(d)
	rank := func(p int) time.Duration { return d[(p*len(d)+99)/100-1] }
	return Percentiles{Count: len(d), P50: rank(50), P90: rank(90), P99: rank(99), Max: d[len(d)-1]}
}

// MarshalJSON writes milliseconds, which JSON readers handle better than nanoseconds.
func (p Percentiles) MarshalJSON() ([]byte, error) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return json.Marshal(struct {
		Count int     `json:"count"`
		P50   float64 `json:"p50_ms"`
		P90   float64 `json:"p90_ms"`
		P99   float64 `json:"p99_ms"`
		Max   float64 `json:"max_ms"`
	}{p.Count, ms(p.P50), ms(p.P90), ms(p.P99), ms(p.Max)})
}

// String is one table line: p50, p90, p99, max.
func (p Percentiles) String() string {
	if p.Count == 0 {
		return fmt.Sprintf("%10s %10s %10s %10s", "-", "-", "-", "-")
	}
	r := func(d time.Duration) string { return roundDuration(d).String() }
	return fmt.Sprintf("%10s %10s %10s %10s", r(p.P50), r(p.P90), r(p.P99), r(p.Max))
}

// roundDuration keeps three significant digits or so.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}

// Report writes the summary as an aligned text table for people.
func (s Summary) Report() string {
	return fmt.Sprintf(""+
		"rows          %d in %v (%.0f rows/s)\n"+
		"batches       %d (%.1f batches/s), %d failed\n"+
		"requests      %d POST, %d GET (%.2f polls per batch), %d retries\n"+
		"latency       %10s %10s %10s %10s\n"+
		"  POST        %s\n"+
		"  GET         %s\n"+
		"  batch       %s\n",
		s.Rows, roundDuration(s.Elapsed), s.RowsPerSecond,
		s.Batches, s.BatchesPerSecond, s.Errors,
		s.POST.Count, s.Polls, s.PollsPerBatch, s.Retries,
		"p50", "p90", "p99", "max",
		s.POST, s.GET, s.Batch)
}
