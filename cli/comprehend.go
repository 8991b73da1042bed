package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"slices"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/comprehend"
	"github.com/asyncfn/asyncfn/metrics"
)

// comprehendFlags turn on and configure the function comprehend (package comprehend),
// off by default because it needs AWS credentials and AWS bills every call.
type comprehendFlags struct {
	enabled bool
	cfg     comprehend.Config
	fn      *comprehend.Function // set by add when enabled
}

func (c *comprehendFlags) register(fs *flag.FlagSet) {
	c.cfg = comprehend.DefaultConfig()
	fs.BoolVar(&c.enabled, "comprehend", false, "serve the function comprehend: sentiment by Amazon Comprehend (billed by AWS per text), with AWS credentials from the SDK's default chain allowed comprehend:BatchDetectSentiment")
	fs.StringVar(&c.cfg.Region, "comprehend-region", c.cfg.Region, "AWS region of Amazon Comprehend (empty: the SDK's, from AWS_REGION or the shared config)")
	fs.StringVar(&c.cfg.Endpoint, "comprehend-endpoint", c.cfg.Endpoint, "URL replacing Amazon Comprehend's endpoint, such as a VPC endpoint (empty: AWS's)")
	fs.StringVar(&c.cfg.Language, "comprehend-language", c.cfg.Language, "language of the texts of rows that do not give one as their second argument")
	fs.IntVar(&c.cfg.Concurrency, "comprehend-concurrency", c.cfg.Concurrency, "BatchDetectSentiment calls of one batch in flight at once, 25 texts each")
	fs.BoolVar(&c.cfg.Label, "comprehend-label", c.cfg.Label, `add the label to each row, {"Sentiment":"POSITIVE",...}, the shape of the sentiment function's rows, rather than the SentimentScore alone as in the original sample`)
	fs.StringVar(&c.cfg.LongText, "comprehend-long-text", c.cfg.LongText, "a text over Comprehend's 5,000 bytes: truncate (at a character boundary), fail (the batch, naming the row) or null")
	fs.StringVar(&c.cfg.RowErrors, "comprehend-row-errors", c.cfg.RowErrors, "a text Comprehend fails to score, also when sent again alone: fail (the batch) or null")
	fs.IntVar(&c.cfg.MaxAttempts, "comprehend-max-attempts", c.cfg.MaxAttempts, "attempts of a call that is throttled, answered with a 5xx or timed out, before the batch is retried later")
	fs.DurationVar(&c.cfg.MaxBackoff, "comprehend-max-backoff", c.cfg.MaxBackoff, "longest delay between those attempts (jittered exponential backoff)")
	fs.DurationVar(&c.cfg.CallTimeout, "comprehend-call-timeout", c.cfg.CallTimeout, "how long one attempt of a call may take")
}

// add returns functions with comprehend added when --comprehend is set.
func (c *comprehendFlags) add(functions []asyncfn.Function, logger *slog.Logger) ([]asyncfn.Function, error) {
	if !c.enabled {
		return functions, nil
	}
	// The context only bounds reading the shared AWS configuration files.
	fn, err := comprehend.New(context.Background(), c.cfg, logger)
	if fe := (*comprehend.FieldError)(nil); errors.As(err, &fe) {
		return nil, fmt.Errorf("--comprehend-%s %s", fe.Field, fe.Message)
	}
	if err != nil {
		return nil, err
	}
	c.fn = fn
	return append(slices.Clip(functions), fn.Function()), nil
}

// observe adds the function's counters of calls and billed units to the process's metrics.
func (c *comprehendFlags) observe(m *metrics.Metrics) error {
	if c.fn == nil {
		return nil
	}
	return m.Registry().Register(c.fn)
}
