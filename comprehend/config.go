package comprehend

import (
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/comprehend/types"

	"github.com/asyncfn/asyncfn"
)

// Config configures the comprehend function. Each field documents its default, which
// DefaultConfig sets.
type Config struct {
	// Region is the AWS region of the Comprehend endpoint. Default empty: the SDK's
	// (AWS_REGION, the shared config's profile); one of them must give it.
	Region string
	// Endpoint replaces Comprehend's endpoint (a VPC endpoint, or a fake in tests).
	// Default empty: AWS's for the region.
	Endpoint string
	// Language is the language of rows that do not name one in their second argument.
	// Default "en", as in the original sample.
	Language string
	// Concurrency is how many BatchDetectSentiment calls of one batch are in flight at
	// once. Default 4: with 25 texts a call, 100 texts at once, within the default quota
	// of 10 calls a second for short texts.
	Concurrency int
	// Label adds the Sentiment label (POSITIVE, NEGATIVE, NEUTRAL or MIXED) to each row,
	// which then has the shape of the sentiment function's rows. Default false: the
	// SentimentScore object alone, what the original sample returned.
	Label bool
	// LongText says what happens to a text over Comprehend's limit of 5,000 UTF-8 bytes:
	// "truncate" cuts it at the last character boundary within the limit, "fail" fails
	// the batch with a 400 naming the row, "null" answers NULL for it without a call.
	// Default "truncate".
	LongText string
	// RowErrors says what happens to a text Comprehend reports in a call's ErrorList
	// and fails again when sent alone: "fail" fails the batch, "null" answers NULL for it.
	// Default "fail".
	RowErrors string
	// MaxAttempts is how many times the SDK sends one call that is throttled, answered
	// with a 5xx or cut by CallTimeout, before the batch is given back to the queue for
	// a later attempt. Default 5.
	MaxAttempts int
	// MaxBackoff caps the SDK's jittered exponential delay between those attempts.
	// Default 20s.
	MaxBackoff time.Duration
	// CallTimeout bounds one attempt of one call. Default 30s.
	CallTimeout time.Duration
}

// Values of LongText and RowErrors.
const (
	Truncate = "truncate"
	Fail     = "fail"
	Null     = "null"
)

// DefaultConfig returns the defaults the fields document.
func DefaultConfig() Config {
	return Config{
		Language:    "en",
		Concurrency: 4,
		LongText:    Truncate,
		RowErrors:   Fail,
		MaxAttempts: 5,
		MaxBackoff:  20 * time.Second,
		CallTimeout: 30 * time.Second,
	}
}

// FieldError is a Config field's bad value (asyncfn.FieldError), the type Validate returns.
type FieldError = asyncfn.FieldError

// Validate returns a *FieldError naming the first bad field.
func (c Config) Validate() error {
	switch {
	case language(c.Language) == "":
		return asyncfn.BadField("language", "%q: %s", c.Language, languageList())
	case c.Concurrency <= 0:
		return asyncfn.BadField("concurrency", "%d: must be positive", c.Concurrency)
	case c.LongText != Truncate && c.LongText != Fail && c.LongText != Null:
		return asyncfn.BadField("long-text", "%q: use truncate, fail or null", c.LongText)
	case c.RowErrors != Fail && c.RowErrors != Null:
		return asyncfn.BadField("row-errors", "%q: use fail or null", c.RowErrors)
	case c.MaxAttempts <= 0:
		return asyncfn.BadField("max-attempts", "%d: must be positive", c.MaxAttempts)
	case c.MaxBackoff <= 0:
		return asyncfn.BadField("max-backoff", "%s: must be positive", c.MaxBackoff)
	case c.CallTimeout <= 0:
		return asyncfn.BadField("call-timeout", "%s: must be positive", c.CallTimeout)
	}
	return nil
}

// language returns Comprehend's spelling of the language code s (any case), or "" if
// Comprehend does not detect sentiment in it.
func language(s string) types.LanguageCode {
	for _, l := range types.LanguageCode("").Values() {
		if strings.EqualFold(string(l), s) {
			return l
		}
	}
	return ""
}

// languageList tells which languages there are, for error messages.
func languageList() string {
	var codes []string
	for _, l := range types.LanguageCode("").Values() {
		codes = append(codes, string(l))
	}
	return "Amazon Comprehend detects sentiment in " + strings.Join(codes, ", ")
}
