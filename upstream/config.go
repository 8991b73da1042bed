package upstream

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/caller"
)

// Config configures one function served by an upstream. Each field documents its
// default, which DefaultConfig sets.
type Config struct {
	// Name is the function's route (it answers at /Name) and its label in the metrics.
	// Required.
	Name string
	// URL is the upstream's endpoint for the function, http or https; every batch is
	// POSTed to it, and polled there with GET when the upstream answers 202. Required.
	URL string
	// Timeout bounds one attempt of a batch against the upstream: its POST, the resends
	// and the polls, until the final answer. Default 15m, far beyond the 29 s of a
	// gateway, which is the point of serving an upstream through asyncfn.
	Timeout time.Duration
	// Headers are sent with every request beside Snowflake's, such as the upstream's
	// API key (sf-custom-api-key for an upstream that is itself asyncfn). Their values
	// are never logged nor put in a message. Default none.
	Headers map[string]string
	// Concurrency caps the batches of this function sent to the upstream at once by one
	// process (the runtime holds the others in the queue), and is the number of
	// connections kept open to it for reuse. Default 16, about the calls Snowflake
	// itself makes at once for a million rows.
	Concurrency int
	// RequestAttempts is how many times one request (the POST, or a GET poll) is sent while
	// it fails with a transport error, 429 or 5xx, before the batch is given back to the
	// queue (asyncfn.RetryableError) for a later attempt, which the function's
	// asyncfn.Function.MaxAttempts and Backoff govern. Default 3.
	RequestAttempts int
	// MinBackoff is the wait before a request is sent again, jittered within [half, all]
	// of it and doubled after each failure up to MaxBackoff. A Retry-After sent with a
	// 429 or 503 replaces it, however long, as long as the attempt's Timeout leaves room
	// to wait it out (else the batch goes back to the queue at once). Defaults 100ms and
	// 10s.
	MinBackoff, MaxBackoff time.Duration
	// PollMin is the wait before the first GET of a batch the upstream answered 202,
	// growing by half after each 202 up to PollMax: how Snowflake polls (package caller's
	// defaults). Defaults 20ms and 2s.
	PollMin, PollMax time.Duration
}

// DefaultConfig returns the defaults the fields document; Name and URL are left to set.
func DefaultConfig() Config {
	return Config{
		Timeout:         15 * time.Minute,
		Concurrency:     16,
		RequestAttempts: 3,
		MinBackoff:      100 * time.Millisecond,
		MaxBackoff:      10 * time.Second,
		PollMin:         caller.DefaultPollMin,
		PollMax:         caller.DefaultPollMax,
	}
}

// FieldError is a Config field's bad value (asyncfn.FieldError), the type Validate returns.
type FieldError = asyncfn.FieldError

// Validate returns a *FieldError naming the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Name == "":
		return asyncfn.BadField("name", "must not be empty")
	case checkURL(c.URL) != "":
		return asyncfn.BadField("url", "%s", checkURL(c.URL))
	}
	positive := []struct {
		field string
		d     time.Duration
	}{{"timeout", c.Timeout}, {"min-backoff", c.MinBackoff}, {"max-backoff", c.MaxBackoff}, {"poll-min", c.PollMin}, {"poll-max", c.PollMax}}
	for _, p := range positive {
		if p.d <= 0 {
			return asyncfn.BadField(p.field, "%s: must be positive", p.d)
		}
	}
	switch {
	case c.Concurrency <= 0:
		return asyncfn.BadField("concurrency", "%d: must be positive", c.Concurrency)
	case c.RequestAttempts <= 0:
		return asyncfn.BadField("request-attempts", "%d: must be positive", c.RequestAttempts)
	case c.MaxBackoff < c.MinBackoff:
		return asyncfn.BadField("max-backoff", "%s: must not be below min-backoff %s", c.MaxBackoff, c.MinBackoff)
	case c.PollMax < c.PollMin:
		return asyncfn.BadField("poll-max", "%s: must not be below poll-min %s", c.PollMax, c.PollMin)
	}
	for name, value := range c.Headers {
		// Checked here, as net/http would refuse every request with such a header.
		if name == "" || strings.IndexFunc(name, notTokenChar) >= 0 {
			return asyncfn.BadField("headers", "%q: not a header name", name)
		}
		if strings.ContainsAny(value, "\r\n\x00") {
			return asyncfn.BadField("headers", "%s: the value has a line break or NUL", name) // not the value: it may be a secret
		}
	}
	return nil
}

// Describe returns the upstream's URL without credentials nor query, which may hold
// secrets: for messages, logs and the status page. cfg.URL must be valid.
func (c Config) Describe() string { return redactedURL(c.URL) }

// checkURL returns what is wrong with an upstream's URL, or "".
func checkURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case s == "":
		return "must be set"
	case err != nil:
		return "is not a URL"
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return fmt.Sprintf("%q: use an http or https URL with a host", u.Redacted())
	}
	return ""
}

// notTokenChar reports whether r may not appear in a header name (RFC 9110's tchar).
func notTokenChar(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r))
}
