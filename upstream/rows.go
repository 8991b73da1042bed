package upstream

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/caller"
	"github.com/asyncfn/asyncfn/internal/wire"
	"github.com/asyncfn/asyncfn/ratelimit"
)

// RowFunction calls an HTTP API once per row (row mode); it implements asyncfn.Func and
// prometheus.Collector. It is safe for concurrent use: its batches share its requests
// in flight, its rate and its connections.
type RowFunction struct {
	*sender  // its Describe and Collect are extended below
	cfg      RowConfig
	tpl      *templates
	pins     map[string][]pin // by secret
	path     []string         // of the result; nil for the whole answer
	slots    chan struct{}    // a request in flight holds one
	limiter  *rate.Limiter    // nil for no limit
	rateWait prometheus.Counter
	redact   *strings.Replacer
}

// NewRows returns the function with cfg, which it validates (a *FieldError names the
// field).
func NewRows(cfg RowConfig, logger *slog.Logger) (*RowFunction, error) {
	tpl, err := cfg.compile()
	if err != nil {
		return nil, err
	}
	f := &RowFunction{
		sender: newSender(cfg.Name, cfg.Concurrency, cfg.RequestAttempts, cfg.MinBackoff, cfg.MaxBackoff,
			logger.With(asyncfn.LogFunction, cfg.Name)),
		cfg:   cfg,
		tpl:   tpl,
		pins:  map[string][]pin{},
		slots: make(chan struct{}, cfg.Concurrency),
		rateWait: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "asyncfn_upstream_rate_wait_seconds_total",
			Help:        "Seconds the requests of the function waited for its rate limit.",
			ConstLabels: prometheus.Labels{"function": cfg.Name},
		}),
	}
	if cfg.Result != "" {
		f.path = strings.Split(cfg.Result, ".")
	}
	if cfg.Rate > 0 {
		f.limiter = rate.NewLimiter(rate.Limit(cfg.Rate), cmp.Or(cfg.Burst, int(math.Ceil(cfg.Rate))))
	}
	var pairs [][2]string // a secret's forms and what stands for them in messages and logs
	for name, s := range cfg.Secrets {
		for _, h := range s.Hosts {
			f.pins[name] = append(f.pins[name], newPin(h))
		}
		// As sent, and as a URL or a JSON string would show it.
		quoted, _ := json.Marshal(s.Value)
		for _, form := range []string{s.Value, url.QueryEscape(s.Value), url.PathEscape(s.Value), string(quoted[1 : len(quoted)-1])} {
			pairs = append(pairs, [2]string{form, "[secret " + name + "]"})
		}
	}
	// Longest first, so that a secret within another is not half shown.
	slices.SortFunc(pairs, func(a, b [2]string) int { return cmp.Compare(len(b[0]), len(a[0])) })
	var replace []string
	for _, p := range pairs {
		replace = append(replace, p[0], p[1])
	}
	f.redact = strings.NewReplacer(replace...)
	return f, nil
}

// Function returns the function to register: at /Name, with the attempt's timeout a
// second beyond RowConfig.Timeout, so that the function's own deadline, whose message
// counts the rows answered, ends it first, and checkpoints (asyncfn.DefaultCheckpoint):
// each row's value is reported with asyncfn.RowDone as it comes, and Call works on any
// subset of a batch's rows, so an attempt after a crash calls the upstream only for the
// rows not saved. Its batches are not capped: their requests share
// RowConfig.Concurrency.
func (f *RowFunction) Function() asyncfn.Function {
	// The URL template up to its query, which may hold a key written in the file.
	where, _, _ := strings.Cut(f.cfg.URL, "?")
	return asyncfn.Function{Name: f.cfg.Name, Func: f, Description: "per row: " + where,
		Timeout: f.cfg.Timeout + time.Second, Checkpoint: asyncfn.DefaultCheckpoint}
}

// Describe implements prometheus.Collector.
func (f *RowFunction) Describe(ch chan<- *prometheus.Desc) {
	f.sender.Describe(ch)
	f.rateWait.Describe(ch)
}

// Collect implements prometheus.Collector.
func (f *RowFunction) Collect(ch chan<- prometheus.Metric) {
	f.sender.Collect(ch)
	f.rateWait.Collect(ch)
}

// rowError is why a row has no value, for RowConfig.OnError.
type rowError struct {
	kind   asyncfn.ErrorKind // of the batch's error, if it fails the batch
	status int               // the upstream's answer, 0 if none
	msg    string            // a sentence without its period, secrets redacted
}

// Call implements asyncfn.Func: it sends one request per row, up to Concurrency at once,
// and returns each row's value as json.RawMessage (nil for NULL).
func (f *RowFunction) Call(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, f.cfg.Timeout, errTimeout)
	defer cancel()
	ctx, stop := context.WithCancelCause(ctx) // by the first error that fails the batch
	defer stop(nil)
	out := make([]any, len(rows))
	var (
		next, answered, failed atomic.Int64
		first                  atomic.Pointer[string] // the first row's failure, for the log
		wg                     sync.WaitGroup
	)
	// A worker per request the batch may have in flight, rather than a goroutine per
	// row, whose stack would grow anew for each.
	for range min(f.cfg.Concurrency, len(rows)) {
		wg.Go(func() {
			for f.acquire(ctx) {
				i := int(next.Add(1) - 1)
				if i >= len(rows) {
					<-f.slots
					return
				}
				r := rows[i]
				v, rerr, err := f.row(ctx, r)
				<-f.slots
				switch {
				case err != nil:
					stop(err)
					return
				case rerr != nil && f.cfg.OnError == OnErrorFail:
					stop(fail(rerr.kind, "row %d: %s.", r.Number, rerr.msg))
					return
				case rerr != nil:
					failed.Add(1)
					first.CompareAndSwap(nil, new(fmt.Sprintf("row %d: %s", r.Number, rerr.msg)))
					if f.cfg.OnError == OnErrorError {
						v, _ = json.Marshal(struct {
							Error  string `json:"error"`
							Status int    `json:"status,omitempty"`
						}{rerr.msg, rerr.status})
					}
				}
				answered.Add(1)
				if v != nil {
					out[i] = v
				}
				asyncfn.RowDone(ctx, r.Number, out[i])
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		if context.Cause(ctx) == errTimeout {
			return nil, fail(asyncfn.Internal, "the function answered %d of %d rows within %s, its timeout; raise its timeout or rate, or lower MAX_BATCH_ROWS.", answered.Load(), len(rows), f.cfg.Timeout)
		}
		return nil, context.Cause(ctx)
	}
	if n := failed.Load(); n > 0 {
		f.logger.Warn("rows failed", "rows", len(rows), "failed", n, "on_error", f.cfg.OnError, "first", *first.Load())
	}
	return out, nil
}

// acquire waits for a slot for one more request in flight, and reports whether it got
// one before ctx ended.
func (f *RowFunction) acquire(ctx context.Context) bool {
	select {
	case f.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

var errRequestTimeout = errors.New("request timeout")

// row sends a row's request, again after a transient failure, and returns its value; or
// why the row has none; or an error that fails the batch (a transient failure that
// outlasted the attempts, which is retryable, or ctx's end).
func (f *RowFunction) row(ctx context.Context, r asyncfn.Row) (json.RawMessage, *rowError, error) {
	req, rerr := f.request(ctx, r)
	if rerr != nil {
		return nil, rerr, nil
	}
	where := func() string { return f.redact.Replace(redacted(req.u)) } // for messages alone
	var retry retrying
	for {
		if f.limiter != nil {
			start := time.Now()
			err := ratelimit.Wait(ctx, f.limiter)
			f.rateWait.Add(time.Since(start).Seconds())
			if err != nil {
				return nil, nil, err
			}
		}
		resp, answer, err := f.send(ctx, req)
		var failure, retryAfter string
		switch {
		case ctx.Err() != nil:
			return nil, nil, context.Cause(ctx)
		case errors.Is(err, errRequestTimeout):
			failure = fmt.Sprintf("gave no answer within %s, the request timeout", f.cfg.RequestTimeout)
		case err != nil:
			failure = unreached(err)
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			v, msg := f.value(answer)
			if msg != "" {
				return nil, f.rowError(asyncfn.Internal, resp.StatusCode, "the upstream %s answered %s %s", where(), resp.Status, msg), nil
			}
			return v, nil, nil
		default:
			var ok bool
			if failure, retryAfter, ok = transient(resp, answer); !ok {
				kind := asyncfn.Internal // a redirect, not followed, or some other status
				if resp.StatusCode >= 400 && resp.StatusCode < 500 {
					kind = asyncfn.InvalidInput
				}
				return nil, f.rowError(kind, resp.StatusCode, "the upstream %s answered %s%s", where(), resp.Status, quote(answer)), nil
			}
		}
		what := fmt.Sprintf("row %d: the upstream %s", r.Number, where())
		if err := f.again(ctx, &retry, what, f.redact.Replace(failure), retryAfter, "row", r.Number); err != nil {
			return nil, nil, err
		}
	}
}

// rowError returns a row's error with its message formatted, its secrets redacted.
func (f *RowFunction) rowError(kind asyncfn.ErrorKind, status int, format string, args ...any) *rowError {
	return &rowError{kind: kind, status: status, msg: f.redact.Replace(fmt.Sprintf(format, args...))}
}

// request renders a row's request and checks it: a URL that is http or https, a method,
// a JSON body that is JSON, secrets sent only to their hosts.
func (f *RowFunction) request(ctx context.Context, r asyncfn.Row) (*request, *rowError) {
	req, err := f.tpl.render(ctx, r.Args)
	if err != nil {
		return nil, f.rowError(asyncfn.InvalidInput, 0, "%s", err)
	}
	req.url = strings.TrimSpace(req.url)
	u, err := url.Parse(req.url)
	req.u = u
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, f.rowError(asyncfn.InvalidInput, 0, "url: %q is not an http or https URL with a host", req.url)
	}
	req.method = strings.ToUpper(strings.TrimSpace(req.method))
	if req.method == "" || strings.IndexFunc(req.method, notTokenChar) >= 0 {
		return nil, f.rowError(asyncfn.InvalidInput, 0, "method: %q is not an HTTP method", req.method)
	}
	if len(req.body) > 0 && req.header.Get("Content-Type") == "" {
		req.header.Set("Content-Type", "application/json")
	}
	if len(req.body) > 0 && isJSON(req.header.Get("Content-Type")) && !wire.Valid(req.body) {
		return nil, f.rowError(asyncfn.InvalidInput, 0, "body: the template did not give valid JSON%s; write an argument as {{json (arg 0)}}, not in quotes", quote(req.body))
	}
	for _, name := range req.secrets {
		if !slices.ContainsFunc(f.pins[name], func(p pin) bool { return p.allows(u) }) {
			return nil, f.rowError(asyncfn.InvalidInput, 0, "the request was not sent, as the secret %s may not be sent to %s (only to %s)", name, hostOf(u), strings.Join(f.cfg.Secrets[name].Hosts, ", "))
		}
	}
	return req, nil
}

// isJSON reports whether a Content-Type is JSON's (application/json, or +json).
func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";") // without mime.ParseMediaType's cost
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// send sends a request within RowConfig.RequestTimeout, whose end is errRequestTimeout.
func (f *RowFunction) send(ctx context.Context, r *request) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, f.cfg.RequestTimeout, errRequestTimeout)
	defer cancel()
	// Built from the URL parsed and checked by request, rather than parsed again.
	req := (&http.Request{Method: r.method, URL: r.u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: r.header, Host: r.u.Host, Body: http.NoBody}).WithContext(ctx)
	if len(r.body) > 0 {
		req.ContentLength = int64(len(r.body))
		req.Body = io.NopCloser(bytes.NewReader(r.body))
		// Lets the transport send the body again on a connection that closed under it.
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(r.body)), nil }
	}
	resp, answer, err := f.do(req)
	if err != nil && context.Cause(ctx) == errRequestTimeout {
		err = errRequestTimeout
	}
	return resp, answer, err
}

// value returns the row's value in a 2xx answer: the part of its JSON RowConfig.Result
// chooses; or why there is none, after the status in a sentence.
func (f *RowFunction) value(answer []byte) (json.RawMessage, string) {
	switch {
	case len(answer) > caller.MaxAnswerBytes:
		return nil, fmt.Sprintf("with more than %d MB", caller.MaxAnswerBytes>>20)
	case len(bytes.TrimSpace(answer)) == 0 && f.path == nil:
		return nil, "" // no content: NULL
	case !wire.Valid(answer):
		return nil, "with a body that is not JSON" + quote(answer)
	}
	v := answer
	for i, key := range f.path {
		var found bool
		if v, found = lookup(v, key); !found {
			at := "the answer"
			if i > 0 {
				at = strings.Join(f.path[:i], ".")
			}
			return nil, fmt.Sprintf("without %s: %s has no %s%s", f.cfg.Result, at, key, quote(answer))
		}
	}
	return v, ""
}

// lookup returns the value at key in v, valid JSON, if it is an object with the key or
// an array with the index; a scan rather than decoding, which would cost more than the
// request.
func lookup(v []byte, key string) ([]byte, bool) {
	i := skipSpace(v, 0)
	switch v[i] {
	case '{':
		var found []byte // the last of the key's values, as encoding/json takes it
		for i = skipSpace(v, i+1); v[i] != '}'; {
			end := skipString(v, i)
			k := v[i:end]
			i = skipSpace(v, skipSpace(v, end)+1) // past the colon
			end = skipValue(v, i)
			if keyIs(k, key) {
				found = v[i:end]
			}
			if i = skipSpace(v, end); v[i] == ',' {
				i = skipSpace(v, i+1)
			}
		}
		return found, found != nil
	case '[':
		n, err := strconv.Atoi(key)
		if err != nil || n < 0 || strconv.Itoa(n) != key {
			return nil, false
		}
		for i = skipSpace(v, i+1); v[i] != ']'; n-- {
			end := skipValue(v, i)
			if n == 0 {
				return v[i:end], true
			}
			if i = skipSpace(v, end); v[i] == ',' {
				i = skipSpace(v, i+1)
			}
		}
	}
	return nil, false
}

// keyIs reports whether the JSON string k is key.
func keyIs(k []byte, key string) bool {
	// Decoded when it has escapes or invalid UTF-8, which encoding/json makes U+FFFD.
	if bytes.IndexByte(k, '\\') < 0 && utf8.Valid(k) {
		return string(k[1:len(k)-1]) == key
	}
	var s string
	return json.Unmarshal(k, &s) == nil && s == key
}

func skipSpace(v []byte, i int) int {
	for i < len(v) && (v[i] == ' ' || v[i] == '\t' || v[i] == '\n' || v[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the end of the string starting at v[i].
func skipString(v []byte, i int) int {
	for i++; v[i] != '"'; i++ {
		if v[i] == '\\' {
			i++
		}
	}
	return i + 1
}

// skipValue returns the end of the value starting at v[i].
func skipValue(v []byte, i int) int {
	depth := 0
	for {
		switch v[i] {
		case '"':
			i = skipString(v, i)
		case '{', '[':
			depth++
			i++
		case '}', ']':
			depth--
			i++
		default:
			if depth == 0 { // a number, true, false or null
				for i < len(v) && !strings.ContainsRune(",}] \t\r\n", rune(v[i])) {
					i++
				}
				return i
			}
			i++
		}
		if depth == 0 {
			return i
		}
	}
}

// pin is a host a secret may be sent to.
type pin struct {
	host string // lower case
	port string // "" for https on 443 only
}

func newPin(s string) pin {
	host, port, err := net.SplitHostPort(s)
	if err != nil { // no port: checked by Validate
		host, port = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), ""
	}
	return pin{strings.ToLower(host), port}
}

// allows reports whether a request to u may carry the secret.
func (p pin) allows(u *url.URL) bool {
	port := cmp.Or(u.Port(), defaultPort(u.Scheme))
	return strings.EqualFold(u.Hostname(), p.host) && (port == p.port || p.port == "" && u.Scheme == "https" && port == "443")
}

// hostOf returns u's host with its port, the default one for the scheme when u has none.
func hostOf(u *url.URL) string {
	return net.JoinHostPort(u.Hostname(), cmp.Or(u.Port(), defaultPort(u.Scheme)))
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}
