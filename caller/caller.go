// Package caller calls an external-function service exactly as Snowflake does: the same
// headers and batch ids, the same body, compression, polling of 202 answers, retries and
// checks of the answer, with Snowflake's error wording. It lets a service be tried and
// load-tested without a Snowflake account; the asyncfn call and bench commands are thin
// layers over it.
package caller

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asyncfn/asyncfn"

	"github.com/asyncfn/asyncfn/internal/wait"
)

// Defaults of Config, chosen to behave like Snowflake.
const (
	// DefaultTimeout is how long an external function's batch may take in all:
	// Snowflake gives an asynchronous batch 10 minutes.
	DefaultTimeout = 10 * time.Minute
	// DefaultRetryBudget caps the total time spent waiting between retries of one batch,
	// like Snowflake's internal retry timeout.
	DefaultRetryBudget = 5 * time.Minute
	DefaultRetryMin    = 100 * time.Millisecond
	DefaultRetryMax    = 10 * time.Second
	// DefaultPollMin and DefaultPollMax bound the wait between GET polls; it grows by half
	// after each 202 so quick batches are fetched at once and slow ones are not hammered.
	DefaultPollMin      = 20 * time.Millisecond
	DefaultPollMax      = 2 * time.Second
	DefaultMaxBatchRows = 4096
	DefaultConcurrency  = 4
)

// Compression is the function's COMPRESSION setting: how request bodies are encoded.
type Compression string

const (
	// CompressionNone sends bodies as they are, which is what a service behind Amazon API
	// Gateway sees (the gateway decompresses), hence the default.
	CompressionNone    Compression = "none"
	CompressionGzip    Compression = "gzip"
	CompressionDeflate Compression = "deflate"
)

// Function is the external function as CREATE EXTERNAL FUNCTION declares it; Snowflake
// sends these in headers and names the function in its error messages.
type Function struct {
	Name       string // e.g. ECHO
	Signature  string // e.g. (TEXT VARCHAR)
	ReturnType string // e.g. VARIANT
}

// Config says where and how to call the service.
type Config struct {
	// URL of the service's endpoint for the function, e.g. http://127.0.0.1:8080/echo.
	URL string
	// Function defaults to the URL's last path element upper-cased, signature "()" and
	// return type VARIANT.
	Function Function
	// QueryID identifies the calling query; default: a new random id, as each query has.
	QueryID string
	// CustomHeaders are sent as sf-custom-<name>, as the function's HEADERS clause.
	CustomHeaders map[string]string
	// ContextHeaders are sent as sf-context-<name> and sf-context-<name>-base64, as the
	// function's CONTEXT_HEADERS.
	ContextHeaders map[string]string
	// Compression of request bodies; default none.
	Compression Compression

	// Timeout bounds one batch from its first POST to its final answer; default 10 minutes.
	Timeout time.Duration
	// RetryBudget bounds the total wait between retries of one batch; default 5 minutes.
	RetryBudget time.Duration
	// WaitForService retries a refused connection even before the service has answered
	// once. By default a refused connection is retried only after the service has
	// answered something: refused from the start, the URL is likelier wrong (a typo'd
	// port) than the service restarting, and the batch fails at once with ErrRefused.
	WaitForService bool
	// OnRetry, if set, is called before each retry with what is retried and why, so
	// that a wait of up to RetryBudget is not silent. Batches call it concurrently.
	OnRetry func(Retry)
	// RetryMin is the first retry's delay, doubled for each later one up to RetryMax
	// (which also bounds a Retry-After); defaults 100 ms and 10 s.
	RetryMin, RetryMax time.Duration
	// PollMin is the wait before the first GET, growing by half after each 202 up to
	// PollMax; defaults 20 ms and 2 s.
	PollMin, PollMax time.Duration

	// MaxBatchRows is the most rows per batch (the function's MAX_BATCH_ROWS); default 4096.
	MaxBatchRows int
	// Concurrency is the most batches in flight at once; default 4.
	Concurrency int

	// HTTPClient, if set, replaces the client NewHTTPClient would make; it must not
	// follow redirects nor decompress answers, or the checks will not see what the
	// service sent.
	HTTPClient *http.Client
}

// Retry is a request about to be sent again, for Config.OnRetry.
type Retry struct {
	BatchID, Method, URL string
	// Reason is why, shortly: "connection refused", "503 Service Unavailable", ...
	Reason string
	// Budget is the configured RetryBudget: the most this batch will wait in all.
	Budget time.Duration
}

// Client calls one external function. It is safe for concurrent use.
type Client struct {
	cfg      Config
	http     *http.Client
	header   http.Header // every header but the batch id
	batch    atomic.Int64
	answered atomic.Bool // some request got an HTTP answer: the service exists
}

// NewClient checks cfg, fills in its defaults and returns a client.
func NewClient(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("the URL %q is not an http or https URL", cfg.URL)
	}
	switch cfg.Compression {
	case "":
		cfg.Compression = CompressionNone
	case CompressionNone, CompressionGzip, CompressionDeflate:
	default:
		return nil, fmt.Errorf("compression %q: use none, gzip or deflate", cfg.Compression)
	}
	for name, d := range map[string]time.Duration{
		"timeout": cfg.Timeout, "retry budget": cfg.RetryBudget, "retry minimum": cfg.RetryMin,
		"retry maximum": cfg.RetryMax, "poll minimum": cfg.PollMin, "poll maximum": cfg.PollMax,
	} {
		if d < 0 {
			return nil, fmt.Errorf("the %s must not be negative", name)
		}
	}
	if cfg.MaxBatchRows < 0 || cfg.Concurrency < 0 {
		return nil, errors.New("the batch size and concurrency must not be negative")
	}
	cfg.Timeout = orDefault(cfg.Timeout, DefaultTimeout)
	cfg.RetryBudget = orDefault(cfg.RetryBudget, DefaultRetryBudget)
	cfg.RetryMin = orDefault(cfg.RetryMin, DefaultRetryMin)
	cfg.RetryMax = max(orDefault(cfg.RetryMax, DefaultRetryMax), cfg.RetryMin)
	cfg.PollMin = orDefault(cfg.PollMin, DefaultPollMin)
	cfg.PollMax = max(orDefault(cfg.PollMax, DefaultPollMax), cfg.PollMin)
	cfg.MaxBatchRows = orDefault(cfg.MaxBatchRows, DefaultMaxBatchRows)
	cfg.Concurrency = orDefault(cfg.Concurrency, DefaultConcurrency)
	if cfg.Function.Name == "" {
		cfg.Function.Name = FunctionNameFromURL(u)
	}
	if cfg.Function.Signature == "" {
		cfg.Function.Signature = "()"
	}
	if cfg.Function.ReturnType == "" {
		cfg.Function.ReturnType = "VARIANT"
	}
	if cfg.QueryID == "" {
		cfg.QueryID = NewQueryID()
	}
	c := &Client{cfg: cfg, http: cfg.HTTPClient}
	if c.http == nil {
		c.http = NewHTTPClient(cfg.Concurrency)
	}
	c.header = c.baseHeader()
	return c, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Config returns the client's configuration with its defaults filled in.
func (c *Client) Config() Config { return c.cfg }

// NewHTTPClient returns a client for many concurrent batches to one host: it keeps an
// idle connection per batch in flight, and neither follows redirects nor decompresses
// answers by itself, so the caller sees exactly what the service answered.
func NewHTTPClient(concurrency int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = max(100, 2*concurrency)
	t.MaxIdleConnsPerHost = max(concurrency, 2)
	t.DisableCompression = true
	return &http.Client{
		Transport:     t,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// FunctionNameFromURL names a function after its route, as it would likely be declared:
// http://host/sentiment is SENTIMENT; EXT_FUNC when the path is empty.
func FunctionNameFromURL(u *url.URL) string {
	base := path.Base(strings.TrimRight(u.Path, "/"))
	if base == "." || base == "/" || base == "" {
		return "EXT_FUNC"
	}
	return strings.Map(func(r rune) rune {
		if r == '_' || r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' {
			return r
		}
		if r >= 'a' && r <= 'z' {
			return r - 'a' + 'A'
		}
		return '_'
	}, base)
}

// NewQueryID returns a random id shaped like Snowflake's query ids.
func NewQueryID() string {
	var b [16]byte
	_, _ = crand.Read(b[:]) // crypto/rand.Read never fails
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// What Snowflake sends beside the headers named in package asyncfn.
const (
	HeaderBase64Suffix     = "-base64"
	snowflakeUserAgent     = "snowflake/1.0"
	snowflakeContentType   = "application/json"
	snowflakeFormat        = "json"
	snowflakeFormatVersion = "1.0"
)

// baseHeader builds the headers every request of the query carries. The sf-* names are
// set lower-case, as they arrive through Snowflake's proxies; the standard ones are
// canonical so that net/http does not add its own User-Agent beside ours.
func (c *Client) baseHeader() http.Header {
	h := http.Header{}
	set := func(name, value string) { h[name] = []string{value} }
	withTwin := func(name, value string) {
		set(name, PlainHeaderValue(value))
		set(name+HeaderBase64Suffix, base64.StdEncoding.EncodeToString([]byte(value)))
	}
	set(asyncfn.HeaderCurrentQueryID, c.cfg.QueryID)
	set(asyncfn.HeaderQueryID, c.cfg.QueryID)
	set(asyncfn.HeaderFormat, snowflakeFormat)
	set(asyncfn.HeaderFormatVersion, snowflakeFormatVersion)
	withTwin(asyncfn.HeaderName, c.cfg.Function.Name)
	withTwin(asyncfn.HeaderSignature, c.cfg.Function.Signature)
	withTwin(asyncfn.HeaderReturnType, c.cfg.Function.ReturnType)
	for k, v := range c.cfg.CustomHeaders {
		set(asyncfn.HeaderCustomPrefix+strings.ToLower(k), PlainHeaderValue(v))
	}
	for k, v := range c.cfg.ContextHeaders {
		withTwin(asyncfn.HeaderContextPrefix+strings.ToLower(k), v)
	}
	h.Set("User-Agent", snowflakeUserAgent)
	h.Set("Content-Type", snowflakeContentType)
	if c.cfg.Compression != CompressionNone {
		h.Set("Content-Encoding", string(c.cfg.Compression))
		h.Set("Accept-Encoding", string(c.cfg.Compression))
	}
	return h
}

// PlainHeaderValue is what Snowflake puts in the plain twin of a -base64 header: the
// value with every character outside printable ASCII replaced by a blank.
func PlainHeaderValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return ' '
		}
		return r
	}, s)
}

// nextBatchID returns a new id shaped like Snowflake's, <query-id>:<n>:1:0:0.
func (c *Client) nextBatchID() string {
	return c.cfg.QueryID + ":" + strconv.FormatInt(c.batch.Add(1), 10) + ":1:0:0"
}

// BatchStats counts what one batch took.
type BatchStats struct {
	// Posts and Gets hold the latency of every POST and GET sent, retries included.
	Posts, Gets []time.Duration
	// Retries counts the requests sent again after a transport error, 429 or 5xx.
	Retries int
	// Latency is the time from the first POST to the final answer.
	Latency time.Duration
}

// Answer is a batch's result.
type Answer struct {
	BatchID string
	// Values holds one value per row, as the JSON the service sent.
	Values []json.RawMessage
	Stats  BatchStats
}

// Call sends one batch as Snowflake does under a new batch id, and returns the values or
// a *BatchError. A 202 is polled with GET until the final answer; transport errors, 429
// and 5xx are retried with backoff within the retry budget, with the same batch id and
// headers; the whole batch is bounded by the timeout.
func (c *Client) Call(ctx context.Context, p Payload) (Answer, error) {
	a := Answer{BatchID: c.nextBatchID()}
	header := c.header.Clone()
	header[asyncfn.HeaderBatchID] = []string{a.BatchID}
	start := time.Now()
	err := c.exchange(ctx, p, header, &a)
	a.Stats.Latency = time.Since(start)
	return a, err
}

var errBatchTimeout = errors.New("batch timeout")

func (c *Client) exchange(ctx context.Context, p Payload, header http.Header, a *Answer) error {
	ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.Timeout, errBatchTimeout)
	defer cancel()
	fail := func(kind error, status int, detail string) error {
		return &BatchError{BatchID: a.BatchID, Function: c.cfg.Function.Name, Kind: kind, Status: status, Detail: detail}
	}
	ended := func() error {
		if context.Cause(ctx) == errBatchTimeout {
			return fail(ErrTimeout, 0, fmt.Sprintf("no final answer within %v", c.cfg.Timeout))
		}
		return fail(ErrCanceled, 0, context.Cause(ctx).Error())
	}
	method := http.MethodPost
	poll := c.cfg.PollMin
	retry := c.cfg.RetryMin
	var waited time.Duration // between retries, against the budget
	for {
		sent := time.Now()
		resp, body, err := c.roundTrip(ctx, method, header, p.body)
		if method == http.MethodPost {
			a.Stats.Posts = append(a.Stats.Posts, time.Since(sent))
		} else {
			a.Stats.Gets = append(a.Stats.Gets, time.Since(sent))
		}
		if err != nil && ctx.Err() != nil {
			return ended()
		}
		var lastErr error
		var retryAfter string
		switch {
		case err != nil && errors.Is(err, syscall.ECONNREFUSED) && !c.cfg.WaitForService && !c.answered.Load():
			return fail(ErrRefused, 0, err.Error())
		case err != nil:
			lastErr = fail(ErrUnreachable, 0, err.Error())
		case resp.StatusCode == http.StatusOK:
			values, ae := checkAnswer(resp.Header, body, p.Rows)
			if ae != nil {
				return fail(ae.kind, resp.StatusCode, ae.detail)
			}
			a.Values = values
			return nil
		case resp.StatusCode == http.StatusAccepted:
			method = http.MethodGet
			retry = c.cfg.RetryMin
			if !wait.Sleep(ctx, poll) {
				return ended()
			}
			poll = min(poll+poll/2, c.cfg.PollMax)
			continue
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
			lastErr = fail(ErrRemoteStatus, resp.StatusCode, bodyForMessage(body))
			retryAfter = resp.Header.Get("Retry-After")
		default:
			return fail(ErrRemoteStatus, resp.StatusCode, bodyForMessage(body))
		}
		delay := RetryDelay(retry, c.cfg.RetryMax, retryAfter, time.Now(), rand.Float64())
		if waited+delay > c.cfg.RetryBudget {
			return lastErr
		}
		if c.cfg.OnRetry != nil {
			c.cfg.OnRetry(Retry{BatchID: a.BatchID, Method: method, URL: c.cfg.URL, Reason: retryReason(err, resp), Budget: c.cfg.RetryBudget})
		}
		if !wait.Sleep(ctx, delay) {
			return ended()
		}
		waited += delay
		retry = min(2*retry, c.cfg.RetryMax)
		a.Stats.Retries++
	}
}

// roundTrip sends one request and reads the whole answer, at most MaxAnswerBytes+1 bytes
// of it; an error reading the body is a transport error like any other.
func (c *Client) roundTrip(ctx context.Context, method string, header http.Header, body []byte) (*http.Response, []byte, error) {
	var rd io.Reader
	if method == http.MethodPost {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.cfg.URL, rd)
	if err != nil {
		return nil, nil, err
	}
	req.Header = header
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	c.answered.Store(true)
	defer resp.Body.Close()
	buf := bytes.NewBuffer(make([]byte, 0, min(max(resp.ContentLength, 512), MaxAnswerBytes)+1))
	if _, err := io.Copy(buf, io.LimitReader(resp.Body, MaxAnswerBytes+1)); err != nil {
		return nil, nil, err
	}
	return resp, buf.Bytes(), nil
}

// retryReason says shortly why a request is retried: its status, or the transport
// error without the request that net/http puts before it.
func retryReason(err error, resp *http.Response) string {
	if err == nil {
		return resp.Status
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// RetryDelay returns the wait before a retry: the Retry-After the service asked for
// (seconds or an HTTP date) if any, else backoff with jitter in [backoff/2, backoff);
// never more than limit. jitter is in [0, 1). Package upstream paces its retries with it.
func RetryDelay(backoff, limit time.Duration, retryAfter string, now time.Time, jitter float64) time.Duration {
	if retryAfter != "" {
		if s, err := strconv.Atoi(strings.TrimSpace(retryAfter)); err == nil && s >= 0 {
			return min(time.Duration(s)*time.Second, limit)
		}
		if t, err := http.ParseTime(retryAfter); err == nil {
			return min(max(t.Sub(now), 0), limit)
		}
	}
	return min(backoff/2+time.Duration(jitter*float64(backoff/2)), limit)
}

// bodyForMessage is an error answer's body as Snowflake quotes it in its message:
// trimmed, and cut short when long.
func bodyForMessage(body []byte) string {
	const maxShown = 1000
	s := strings.TrimSpace(string(body))
	if len(s) > maxShown {
		s = s[:maxShown] + "..."
	}
	return s
}
