package upstream

import (
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/asyncfn/asyncfn"
)

// RowConfig configures a function served by one request per row (NewRows). Each field
// documents its default, which DefaultRowConfig sets, and its YAML-style name, which
// Validate's errors use.
//
// URL, Method, the values of Headers and Body are templates (Go's text/template) over
// the row; see the package documentation for what they can use.
type RowConfig struct {
	// Name (name) is the function's route (it answers at /Name) and its label in the
	// metrics. Required.
	Name string
	// URL (url) is the request's URL, a template that must give an http or https URL
	// with a host. Required.
	URL string
	// Method (method) is the request's method, a template. Default POST.
	Method string
	// Headers (headers) are the request's headers, by name; each value is a template. A
	// request with a body gets Content-Type: application/json unless they set one.
	// Default none.
	Headers map[string]string
	// Body (body) is the request's body, a template; with a JSON Content-Type it must
	// give valid JSON. Default empty: no body.
	Body string
	// Secrets (secrets) are values the templates use as {{secret "NAME"}}, each with
	// the hosts it may be sent to: a request that uses a secret and whose URL's host is
	// not one of the secret's is refused (the row fails, nothing is sent). A host is
	// "name" (the scheme's default port only) or "name:port", matched exactly (without
	// regard to case). Secret values are never logged nor shown in a message. Default
	// none.
	Secrets map[string]Secret
	// Result (result) chooses the row's value in the answer's JSON: keys and array
	// indexes (from 0) separated by dots, as choices.0.message.content. A path not in
	// the answer is a row error. Default empty: the whole answer.
	Result string
	// OnError (on-error) says what a row error does: "fail" fails the batch with the
	// row's number and the reason, "null" makes the row's value NULL, "error" makes it
	// an object {"error": "<the reason>", "status": <the upstream's status, if it
	// answered>}. A transient failure (a transport error, 429, 5xx, the request
	// timeout) that outlasts RequestAttempts is no row error: the batch is given back
	// to the queue for a later attempt (asyncfn.RetryableError). Default "fail".
	OnError string
	// Concurrency (concurrency) caps the requests in flight for the function in the
	// process, shared by all its batches, and is the number of connections kept open
	// for reuse. Default 8.
	Concurrency int
	// Rate (rate) caps the requests per second of the function in the process, shared
	// by all its batches; resent requests count. Default 0: no limit.
	Rate float64
	// Burst (burst) is how many requests may go at once above Rate after a quiet spell.
	// Default 0: Rate rounded up.
	Burst int
	// RequestAttempts (request-attempts) is how many times one row's request is sent
	// while it fails transiently before the batch is given back to the queue. Default 3.
	RequestAttempts int
	// MinBackoff (min-backoff) is the wait before a request is sent again, jittered
	// within [half, all] of it and doubled after each failure up to MaxBackoff
	// (max-backoff). A Retry-After sent with a 429 or 503 replaces it, however long, if
	// Timeout leaves room for it. Defaults 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// RequestTimeout (request-timeout) bounds one request, from sending it to reading
	// the whole answer; a request cut by it is sent again like a transport error.
	// Default 60s.
	RequestTimeout time.Duration
	// Timeout (timeout) bounds one attempt of a batch, every row's requests and waits
	// together. Default 30m: a batch takes at least rows/Rate seconds (10,000 rows at 10
	// per second, 17 minutes), so keep Snowflake's MAX_BATCH_ROWS within Rate × Timeout.
	Timeout time.Duration
}

// Secret is a value for the templates with the hosts it may be sent to.
type Secret struct {
	Value string
	// Hosts are "name" or "name:port" (RowConfig.Secrets says how they match). Required.
	Hosts []string
}

// Values of RowConfig.OnError.
const (
	OnErrorFail  = "fail"
	OnErrorNull  = "null"
	OnErrorError = "error"
)

// DefaultRowConfig returns the defaults the fields document; Name and URL are left to set.
func DefaultRowConfig() RowConfig {
	return RowConfig{
		Method:          "POST",
		OnError:         OnErrorFail,
		Concurrency:     8,
		RequestAttempts: 3,
		MinBackoff:      100 * time.Millisecond,
		MaxBackoff:      10 * time.Second,
		RequestTimeout:  60 * time.Second,
		Timeout:         30 * time.Minute,
	}
}

// Validate returns a *FieldError naming the first bad field; the templates are parsed,
// and every secret they name must be among Secrets.
func (c RowConfig) Validate() error {
	_, err := c.compile()
	return err
}

// check validates the fields other than the templates.
func (c RowConfig) check() error {
	if c.Name == "" {
		return asyncfn.BadField("name", "must not be empty")
	}
	for name, s := range c.Secrets {
		switch {
		case name == "":
			return asyncfn.BadField("secrets", "a secret has no name")
		case s.Value == "":
			return asyncfn.BadField("secrets", "%s: the value is empty", name)
		case len(s.Hosts) == 0:
			return asyncfn.BadField("secrets", "%s: name the hosts it may be sent to", name)
		}
		for _, h := range s.Hosts {
			if !validHost(h) {
				return asyncfn.BadField("secrets", "%s: %q is not a host name, with an optional :port", name, h)
			}
		}
	}
	for _, key := range strings.Split(c.Result, ".") {
		if key == "" && c.Result != "" {
			return asyncfn.BadField("result", "%q: a key is empty; use keys and indexes separated by single dots", c.Result)
		}
	}
	positive := []struct {
		field string
		d     time.Duration
	}{{"min-backoff", c.MinBackoff}, {"max-backoff", c.MaxBackoff}, {"request-timeout", c.RequestTimeout}, {"timeout", c.Timeout}}
	for _, p := range positive {
		if p.d <= 0 {
			return asyncfn.BadField(p.field, "%s: must be positive", p.d)
		}
	}
	switch {
	case c.OnError != OnErrorFail && c.OnError != OnErrorNull && c.OnError != OnErrorError:
		return asyncfn.BadField("on-error", "%q: use fail, null or error", c.OnError)
	case c.Concurrency <= 0:
		return asyncfn.BadField("concurrency", "%d: must be positive", c.Concurrency)
	case c.Rate < 0 || c.Rate > 1e9:
		return asyncfn.BadField("rate", "%g: must be a number of requests per second, or 0 for no limit", c.Rate)
	case c.Burst < 0:
		return asyncfn.BadField("burst", "%d: must not be negative", c.Burst)
	case c.RequestAttempts <= 0:
		return asyncfn.BadField("request-attempts", "%d: must be positive", c.RequestAttempts)
	case c.MaxBackoff < c.MinBackoff:
		return asyncfn.BadField("max-backoff", "%s: must not be below min-backoff %s", c.MaxBackoff, c.MinBackoff)
	}
	return nil
}

// validHost reports whether s is a host name or IP address, with an optional port, as
// a URL's host is written.
func validHost(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), ""
	} else if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return false
	}
	const nameChars = "abcdefghijklmnopqrstuvwxyz0123456789.-_"
	return net.ParseIP(host) != nil || host != "" && strings.Trim(strings.ToLower(host), nameChars) == ""
}
