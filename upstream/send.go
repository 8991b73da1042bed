package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/caller"
	"github.com/asyncfn/asyncfn/internal/wait"
)

// sender is what the batch and row modes share: the client with its kept connections,
// the resending of failed requests, and the metrics of the requests.
type sender struct {
	http                   *http.Client
	logger                 *slog.Logger
	attempts               int
	minBackoff, maxBackoff time.Duration

	requests *prometheus.CounterVec
	latency  prometheus.Histogram
	retries  prometheus.Counter
	backoff  prometheus.Counter
}

// newSender returns the sender of function name, keeping connections for concurrency
// requests at once, sending a failed request up to attempts times.
func newSender(name string, concurrency, attempts int, minBackoff, maxBackoff time.Duration, logger *slog.Logger) *sender {
	labels := prometheus.Labels{"function": name}
	return &sender{
		http:       caller.NewHTTPClient(concurrency),
		logger:     logger,
		attempts:   attempts,
		minBackoff: minBackoff,
		maxBackoff: maxBackoff,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "asyncfn_upstream_requests_total",
			Help:        "Requests sent to the function's upstream, by the class of its answer (2xx, 3xx, 4xx, 5xx, or error when none came).",
			ConstLabels: labels,
		}, []string{"class"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:        "asyncfn_upstream_request_duration_seconds",
			Help:        "Time from sending a request to the function's upstream to reading the whole of its answer.",
			ConstLabels: labels,
			Buckets:     []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900},
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "asyncfn_upstream_retries_total",
			Help:        "Requests sent to the function's upstream again after a transport error, 429 or 5xx.",
			ConstLabels: labels,
		}),
		backoff: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "asyncfn_upstream_backoff_seconds_total",
			Help:        "Seconds spent waiting before sending a request to the function's upstream again (backoff or Retry-After).",
			ConstLabels: labels,
		}),
	}
}

// Describe implements prometheus.Collector.
func (s *sender) Describe(ch chan<- *prometheus.Desc) {
	s.requests.Describe(ch)
	s.latency.Describe(ch)
	s.retries.Describe(ch)
	s.backoff.Describe(ch)
}

// Collect implements prometheus.Collector.
func (s *sender) Collect(ch chan<- prometheus.Metric) {
	s.requests.Collect(ch)
	s.latency.Collect(ch)
	s.retries.Collect(ch)
	s.backoff.Collect(ch)
}

// do sends one request and reads the whole answer, at most caller.MaxAnswerBytes+1 bytes
// of it (one more than an answer may have, for the check to say so), counting it in the
// metrics. A failure to read the answer is a transport error like any other.
func (s *sender) do(req *http.Request) (*http.Response, []byte, error) {
	start := time.Now()
	resp, answer, err := read(s.http.Do(req))
	s.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		s.requests.WithLabelValues("error").Inc()
		return nil, nil, err
	}
	s.requests.WithLabelValues(strconv.Itoa(resp.StatusCode/100) + "xx").Inc()
	return resp, answer, nil
}

func read(resp *http.Response, err error) (*http.Response, []byte, error) {
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	buf := bytes.NewBuffer(make([]byte, 0, min(max(resp.ContentLength, 512), caller.MaxAnswerBytes)+1))
	if _, err := io.Copy(buf, io.LimitReader(resp.Body, caller.MaxAnswerBytes+1)); err != nil {
		return nil, nil, err
	}
	return resp, buf.Bytes(), nil
}

// unreached says why a request got no answer, without the method and URL net/http puts
// before the cause.
func unreached(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return "could not be reached (" + err.Error() + ")"
}

// transient reports whether an answer asks for the request to be sent again later (a 429
// or a 5xx), with what went wrong and the Retry-After to honour, if any.
func transient(resp *http.Response, answer []byte) (failure, retryAfter string, ok bool) {
	if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode < 500 {
		return "", "", false
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		retryAfter = resp.Header.Get("Retry-After")
	}
	return "answered " + resp.Status + quote(answer), retryAfter, true
}

// retrying paces the sends of one request that fails for want of an answer, a 429 or a
// 5xx: after each failure a jittered backoff doubling up to the maximum, or the answer's
// Retry-After however long, within ctx's deadline.
type retrying struct {
	failures int
	backoff  time.Duration // before the next send, before jitter; 0 for the minimum
}

// again waits before the request that failed is sent again, and returns nil; or, when
// the attempts are spent or the wait would outlast ctx's deadline, a Retryable error
// "<what> <failure>, <why not again>."; or ctx's error if it ends first. failure is put
// in the log with logArgs.
func (s *sender) again(ctx context.Context, r *retrying, what, failure, retryAfter string, logArgs ...any) error {
	r.failures++
	if r.backoff == 0 {
		r.backoff = s.minBackoff
	}
	deadline, _ := ctx.Deadline() // every caller sets one
	left := time.Until(deadline)
	delay := caller.RetryDelay(r.backoff, left, retryAfter, time.Now(), rand.Float64())
	switch {
	case r.failures >= s.attempts:
		times := "once"
		if r.failures > 1 {
			times = strconv.Itoa(r.failures) + " times in a row"
		}
		return fail(asyncfn.Retryable, "%s %s, %s.", what, failure, times)
	case delay >= left:
		return fail(asyncfn.Retryable, "%s %s, and the wait before asking again is longer than the attempt has left.", what, failure)
	}
	s.retries.Inc()
	s.logger.Warn("upstream request failed; sending it again", append(logArgs, "failure", failure, "delay", delay)...)
	start := time.Now()
	slept := wait.Sleep(ctx, delay)
	s.backoff.Add(time.Since(start).Seconds())
	if !slept {
		return context.Cause(ctx)
	}
	r.backoff = min(2*r.backoff, s.maxBackoff)
	return nil
}

// quote returns ": " and the start of an upstream's answer, for a message; "" if it is
// empty.
func quote(answer []byte) string {
	const maxShown = 300
	// One line of valid text (an error page has many), without the period the message
	// puts after it.
	s := strings.TrimSuffix(strings.Join(strings.Fields(strings.ToValidUTF8(string(answer), "\uFFFD")), " "), ".")
	if s == "" {
		return ""
	}
	if len(s) > maxShown {
		cut := maxShown
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return ": " + s
}

// fail returns a batch's error of kind with a message for the SQL user.
func fail(kind asyncfn.ErrorKind, format string, args ...any) error {
	return &asyncfn.Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// redactedURL returns a valid URL without its credentials, query nor fragment, which may
// hold secrets: how a message or a log names an upstream.
func redactedURL(s string) string {
	u, _ := url.Parse(s)
	return redacted(u)
}

// redacted is redactedURL of a parsed URL.
func redacted(u *url.URL) string {
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}
