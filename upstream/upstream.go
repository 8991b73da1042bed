// Package upstream serves a function by calling an upstream: a synchronous
// external-function service, which asyncfn makes asynchronous. Snowflake's batch, kept
// by the runtime, is POSTed to the upstream in Snowflake's own format, with a timeout
// far beyond a gateway's; the answer is checked as Snowflake checks it (package caller)
// and becomes the batch's result.
//
// What the upstream does, and what the SQL user then sees:
//
//   - 200 with a good answer: its rows.
//   - 200 with a bad answer (not JSON, no "data", a wrong number of rows, rows out of
//     order, a row that is not [number, value], over 10 MB): the batch fails at once,
//     422, with a sentence that says what the upstream did wrong.
//   - 202: it is polled with GET, with the same headers, as Snowflake would, until it
//     answers otherwise (the SQL user's own polls are answered 202 meanwhile).
//   - 429, 5xx, or no answer (a refused or broken connection): the request is sent
//     again after a jittered backoff, or after the Retry-After of a 429 or 503, up to
//     Config.RequestAttempts times; then the batch goes back to the queue for a later
//     attempt (asyncfn.RetryableError), and when those run out fails, 422, with the
//     upstream's last answer.
//   - 400: the batch fails, 400, with the upstream's message: it rejected the rows.
//   - Any other status (another 4xx, a redirect, which is not followed): the batch fails,
//     422, with the status and the upstream's message.
//   - No final answer within Config.Timeout (a slow upstream, a hanging connection): the
//     batch fails, 422, saying so.
//
// # Row mode
//
// NewRows serves a function by calling an HTTP API once per row instead (a model's
// chat completion, a geocoder), up to RowConfig.Concurrency requests in flight and
// RowConfig.Rate per second, both shared by all the function's batches in the process.
// The request's URL, method, header values and body are Go templates
// (text/template) with these functions:
//
//	{{arg 0}}               the row's first argument (counted from 0) as text: a string
//	                        without quotes, a number as sent, NULL as nothing, an object
//	                        or array as JSON; a missing argument is the row's error
//	{{json (arg 0)}}        the argument as JSON, exactly as sent: what a JSON body wants
//	{{json args}}           all the arguments, a JSON array
//	{{urlquery (arg 0)}}    escaped for a URL's query; {{urlpath (arg 0)}} for its path
//	{{header "language"}}   the batch's sf-custom-language header (the function's
//	                        HEADERS = ('language' = ...)), "" if it has none
//	{{secret "openai"}}     RowConfig.Secrets["openai"], sent to its hosts only
//
// with text/template's own (if, or, eq, printf, ...). For example:
//
//	url:  https://api.openai.com/v1/chat/completions
//	headers: {Authorization: 'Bearer {{secret "openai"}}'}
//	body: '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": {{json (arg 0)}}}]}'
//	result: choices.0.message.content
//
// A row's value is its 2xx answer's JSON, or the part RowConfig.Result chooses (an empty
// answer is NULL). What fails a row (its templates, a refused secret, a 4xx other than
// 429, a redirect, an answer that is not JSON or lacks the result) does what
// RowConfig.OnError says: fail the batch naming the row (400 for a 4xx and the rows' own
// faults, else 422), or make the row NULL or {"error": ..., "status": ...}. A 429, a 5xx,
// no answer or RowConfig.RequestTimeout is sent again as in batch mode, up to
// RowConfig.RequestAttempts times; then the batch goes back to the queue, as the same
// row would likely fail the same way now. Each row's value is reported with
// asyncfn.RowDone as it comes, so that with checkpoints a later attempt sends only the
// rows not answered.
package upstream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/caller"
	"github.com/asyncfn/asyncfn/internal/wait"
)

// Function calls the upstream for the rows of a batch; it implements asyncfn.Func and
// prometheus.Collector. It is safe for concurrent use.
type Function struct {
	*sender // its Describe and Collect
	cfg     Config
	where   string      // the URL without credentials nor query, for messages and logs
	header  http.Header // what every request carries, before the batch's own headers
}

// New returns the function with cfg, which it validates (a *FieldError names the field).
func New(cfg Config, logger *slog.Logger) (*Function, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	where := cfg.Describe()
	f := &Function{
		sender: newSender(cfg.Name, cfg.Concurrency, cfg.RequestAttempts, cfg.MinBackoff, cfg.MaxBackoff,
			logger.With(asyncfn.LogFunction, cfg.Name, "upstream", where)),
		cfg:    cfg,
		where:  where,
		header: http.Header{},
	}
	// The sf-* names lower-case, as Snowflake's proxies deliver them.
	f.header["Content-Type"] = []string{"application/json"}
	f.header[asyncfn.HeaderFormat] = []string{"json"}
	f.header[asyncfn.HeaderFormatVersion] = []string{"1.0"}
	for name, value := range cfg.Headers {
		f.header[name] = []string{value}
	}
	return f, nil
}

// Function returns the function to register: at /Name, with the attempt's timeout a
// second beyond Config.Timeout (so that the upstream's own deadline, whose message names
// the upstream, ends it first), and Config.Concurrency batches at once.
func (f *Function) Function() asyncfn.Function {
	return asyncfn.Function{Name: f.cfg.Name, Func: f, Description: f.where, Timeout: f.cfg.Timeout + time.Second, Concurrency: f.cfg.Concurrency}
}

var errTimeout = errors.New("upstream timeout")

// Call implements asyncfn.Func: it sends the rows to the upstream and returns its values
// as json.RawMessage, one per row.
func (f *Function) Call(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, f.cfg.Timeout, errTimeout)
	defer cancel()
	args := make([]caller.Row, len(rows))
	for i, r := range rows {
		args[i] = r.Args
	}
	body := caller.EncodeRows(args) // numbered from 0, as the answer is checked
	values, err := f.exchange(ctx, f.batchHeader(ctx, body), body, len(rows))
	if err != nil {
		return nil, err
	}
	out := make([]any, len(values))
	for i, v := range values {
		out[i] = v
	}
	return out, nil
}

// batchHeader returns the headers of a batch's requests: the constant ones, the batch's
// kept headers (its function's HEADERS and CONTEXT_HEADERS) but not its trace context,
// which belongs to the POST that brought it, Config.Headers, and a batch id.
//
// The batch id is the upstream's idempotency key: the one Snowflake sent when it is
// among the kept headers, else a hash of the function, the headers passed on and the
// body, the same for every attempt of the batch, so that an asynchronous upstream finds
// its earlier attempt. (Two batches of the same rows and headers share it, which a
// function whose answer depends on its rows alone does not mind.)
func (f *Function) batchHeader(ctx context.Context, body []byte) http.Header {
	kept := asyncfn.RequestHeaders(ctx)
	delete(kept, "traceparent")
	delete(kept, "tracestate")
	names := slices.Sorted(maps.Keys(kept)) // in order, for the hash
	h := make(http.Header, len(f.header)+len(kept)+1)
	for _, name := range names {
		h[name] = []string{kept[name]}
	}
	if _, ok := kept[asyncfn.HeaderBatchID]; !ok {
		sum := sha256.New()
		sum.Write([]byte(f.cfg.Name))
		for _, name := range names {
			sum.Write([]byte("\n" + name + ": " + kept[name]))
		}
		sum.Write([]byte("\n\n"))
		sum.Write(body)
		h[asyncfn.HeaderBatchID] = []string{hex.EncodeToString(sum.Sum(nil)[:16])}
	}
	maps.Copy(h, f.header)
	return h
}

// exchange POSTs the batch and returns the upstream's final answer, polling a 202 and
// sending again a request that failed for want of an answer, a 429 or a 5xx.
func (f *Function) exchange(ctx context.Context, header http.Header, body []byte, rows int) ([]json.RawMessage, error) {
	method := http.MethodPost
	poll := f.cfg.PollMin
	var r retrying // of the current request
	for {
		resp, answer, err := f.roundTrip(ctx, method, header, body)
		if err != nil && ctx.Err() != nil {
			return nil, f.ended(ctx)
		}
		var failure, retryAfter string
		switch {
		case err != nil:
			failure = unreached(err)
		case resp.StatusCode == http.StatusOK:
			values, err := caller.CheckAnswer(resp.Header, answer, rows)
			if err != nil {
				return nil, fail(asyncfn.Internal, "the upstream %s sent a bad answer: %s.", f.where, err)
			}
			return values, nil
		case resp.StatusCode == http.StatusAccepted:
			method, r = http.MethodGet, retrying{}
			if !wait.Sleep(ctx, poll) {
				return nil, f.ended(ctx)
			}
			poll = min(poll+poll/2, f.cfg.PollMax)
			continue
		case resp.StatusCode == http.StatusBadRequest:
			return nil, fail(asyncfn.InvalidInput, "the upstream %s rejected the rows: %s%s.", f.where, resp.Status, quote(answer))
		default:
			var ok bool
			if failure, retryAfter, ok = transient(resp, answer); !ok {
				return nil, fail(asyncfn.Internal, "the upstream %s answered %s to a %s%s.", f.where, resp.Status, method, quote(answer))
			}
		}
		if err := f.again(ctx, &r, "the upstream "+f.where, failure, retryAfter, "method", method); err != nil {
			if ctx.Err() != nil {
				return nil, f.ended(ctx)
			}
			return nil, err
		}
	}
}

// roundTrip sends one request of the batch.
func (f *Function) roundTrip(ctx context.Context, method string, header http.Header, body []byte) (*http.Response, []byte, error) {
	var rd io.Reader
	if method == http.MethodPost {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, f.cfg.URL, rd)
	if err != nil {
		return nil, nil, err
	}
	req.Header = header
	return f.do(req)
}

// ended is the error of an exchange cut by its context: the upstream's timeout, or
// whatever ended the attempt (shutdown, a lost lease), which the runtime handles.
func (f *Function) ended(ctx context.Context) error {
	if context.Cause(ctx) == errTimeout {
		return fail(asyncfn.Internal, "the upstream %s gave no final answer within %s, the function's timeout.", f.where, f.cfg.Timeout)
	}
	return context.Cause(ctx)
}
