// Package comprehend serves the function comprehend: the original AWS sample's sentiment,
// by Amazon Comprehend's BatchDetectSentiment, for deployments that must keep Comprehend
// rather than switch to the local VADER model of package sentiment.
//
// Each row is comprehend(text) or comprehend(text, language). Rows are sent 25 to a call
// (Comprehend's limit), grouped by language, with up to Config.Concurrency calls of a batch
// in flight. A row's answer is Comprehend's SentimentScore, {"Positive": .., "Negative": ..,
// "Neutral": .., "Mixed": ..}, exactly what the sample returned (json.dumps of it), or with
// Config.Label also "Sentiment", the shape of the sentiment function's rows. A NULL or empty
// text answers NULL without a call.
//
// Comprehend bills each document by units of 100 characters, at least 3: the function
// counts its calls and those units in Prometheus counters (it is a prometheus.Collector)
// and logs them for each batch.
package comprehend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/comprehend"
	"github.com/aws/aws-sdk-go-v2/service/comprehend/types"
	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/sentiment"
)

// Name is the function's route.
const Name = "comprehend"

// Comprehend's limits on BatchDetectSentiment.
const (
	MaxTexts     = 25
	MaxTextBytes = 5000
)

// Function calls Comprehend for the rows of a batch; it implements asyncfn.Func.
type Function struct {
	client *comprehend.Client
	cfg    Config
	logger *slog.Logger
	calls  *prometheus.CounterVec
	units  prometheus.Counter
}

// New returns the function with cfg, which it validates. The credentials come from the
// SDK's default chain (environment, shared config, instance or task role); optFns adjust
// the SDK's configuration further.
func New(ctx context.Context, cfg Config, logger *slog.Logger, optFns ...func(*config.LoadOptions) error) (*Function, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = cfg.MaxAttempts
				o.MaxBackoff = cfg.MaxBackoff
				// The client-side retry quota would fail calls during sustained
				// throttling, which bulk scoring provokes; backoff alone paces them.
				o.RateLimiter = ratelimit.None
			})
		}),
		config.WithHTTPClient(awshttp.NewBuildableClient().WithTimeout(cfg.CallTimeout)),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, append(opts, optFns...)...)
	if err != nil {
		return nil, fmt.Errorf("comprehend: AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		return nil, &FieldError{Field: "region", Message: "is not set and the SDK found none: set it or AWS_REGION"}
	}
	client := comprehend.NewFromConfig(awsCfg, func(o *comprehend.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	})
	return &Function{
		client: client,
		cfg:    cfg,
		logger: logger,
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "asyncfn_comprehend_calls_total",
			Help: "BatchDetectSentiment calls made by the comprehend function, by outcome (ok, error); the SDK's retries of a call are not counted apart.",
		}, []string{"outcome"}),
		units: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "asyncfn_comprehend_billed_units_total",
			Help: "Amazon Comprehend units billed for the texts scored: 100 characters a unit, at least 3 a text.",
		}),
	}, nil
}

// Function returns the function to register, at /comprehend.
func (f *Function) Function() asyncfn.Function {
	return asyncfn.Function{Name: Name, Func: f}
}

// Describe implements prometheus.Collector.
func (f *Function) Describe(ch chan<- *prometheus.Desc) {
	f.calls.Describe(ch)
	f.units.Describe(ch)
}

// Collect implements prometheus.Collector.
func (f *Function) Collect(ch chan<- prometheus.Metric) {
	f.calls.Collect(ch)
	f.units.Collect(ch)
}

// doc is one text to score: its index in the batch and its text as sent.
type doc struct {
	index int
	text  string
}

// call is the texts of one BatchDetectSentiment call.
type call struct {
	language types.LanguageCode
	docs     []doc
}

// Call implements asyncfn.Func.
func (f *Function) Call(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
	batchLanguage := language(f.cfg.Language)
	if h := asyncfn.RequestHeader(ctx, "sf-custom-language"); h != "" {
		// The function's HEADERS = ('language' = '...'): the default of this query.
		if batchLanguage = language(h); batchLanguage == "" {
			return nil, asyncfn.InvalidInputf("the function's language header asks for %q, which Amazon Comprehend has no sentiment model for; %s.", h, languageList())
		}
	}
	calls, err := f.plan(rows, batchLanguage)
	if err != nil {
		return nil, err
	}
	out := make([]any, len(rows))
	var stats batchStats
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(f.cfg.Concurrency)
	for _, c := range calls {
		g.Go(func() error { return f.run(gctx, c, rows, out, &stats) })
	}
	err = g.Wait()
	f.logger.Info("comprehend batch", "rows", len(rows), "calls", stats.calls.Load(), "billed_units", stats.units.Load(), "err", err)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// plan reads the rows into calls: the texts to score grouped by language (that of their
// second argument, else batchLanguage), in row order, at most MaxTexts to a call.
func (f *Function) plan(rows []asyncfn.Row, batchLanguage types.LanguageCode) ([]call, error) {
	byLanguage := map[types.LanguageCode][]doc{}
	var order []types.LanguageCode
	for i, r := range rows {
		if len(r.Args) != 1 && len(r.Args) != 2 {
			return nil, asyncfn.InvalidInputf("comprehend takes 1 or 2 arguments, the text and optionally its language, but row %d has %d.", r.Number, len(r.Args))
		}
		text, ok := stringArg(r.Args[0])
		if !ok {
			return nil, asyncfn.InvalidInputf("comprehend takes the text as a string, but row %d's is not one; cast the column to VARCHAR.", r.Number)
		}
		lang := batchLanguage
		if len(r.Args) == 2 && string(r.Args[1]) != "null" {
			s, ok := stringArg(r.Args[1])
			if !ok {
				return nil, asyncfn.InvalidInputf("comprehend takes the language as a string such as 'en', but row %d's is not one.", r.Number)
			}
			if lang = language(s); lang == "" {
				return nil, asyncfn.InvalidInputf("row %d asks for language %q, which Amazon Comprehend has no sentiment model for; %s.", r.Number, s, languageList())
			}
		}
		if text == "" { // NULL or empty: Comprehend refuses an empty text
			continue
		}
		if len(text) > MaxTextBytes {
			switch f.cfg.LongText {
			case Fail:
				return nil, asyncfn.InvalidInputf("row %d's text is %d bytes, over Amazon Comprehend's limit of %d; shorten it in SQL (LEFT) or let asyncfn truncate it.", r.Number, len(text), MaxTextBytes)
			case Null:
				continue
			}
			text = truncate(text, MaxTextBytes)
		}
		if _, seen := byLanguage[lang]; !seen {
			order = append(order, lang)
		}
		byLanguage[lang] = append(byLanguage[lang], doc{index: i, text: text})
	}
	var calls []call
	for _, lang := range order {
		docs := byLanguage[lang]
		for len(docs) > 0 {
			n := min(len(docs), MaxTexts)
			calls = append(calls, call{language: lang, docs: docs[:n]})
			docs = docs[n:]
		}
	}
	return calls, nil
}

// stringArg returns a JSON string argument's value, "" for NULL; ok is false for any
// other JSON value: a number or an object is almost always a call on the wrong column.
func stringArg(arg json.RawMessage) (s string, ok bool) {
	if string(arg) == "null" {
		return "", true
	}
	if len(arg) == 0 || arg[0] != '"' || json.Unmarshal(arg, &s) != nil {
		return "", false
	}
	return s, true
}

// truncate cuts s to at most n bytes at a character boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// billedUnits is what Comprehend bills for scoring text: a unit per 100 characters,
// at least 3.
func billedUnits(text string) int {
	return max(3, (utf8.RuneCountInString(text)+99)/100)
}

// run makes one call and puts its scores into out. A text in the call's ErrorList is sent
// once more alone before Config.RowErrors decides.
func (f *Function) run(ctx context.Context, c call, rows []asyncfn.Row, out []any, stats *batchStats) error {
	failed, err := f.score(ctx, c, out, stats)
	if err != nil {
		return err
	}
	for _, e := range failed {
		d := c.docs[e.at]
		again, err := f.score(ctx, call{language: c.language, docs: []doc{d}}, out, stats)
		if err != nil {
			return err
		}
		if len(again) == 0 {
			continue
		}
		e = again[0]
		if f.cfg.RowErrors == Null {
			f.logger.Warn("Amazon Comprehend could not score a text; answering NULL", "row", rows[d.index].Number, "code", e.code, "message", e.message)
			continue
		}
		return failure(asyncfn.Internal, "Amazon Comprehend could not score row %d, also when sent alone: %s (%s).", rows[d.index].Number, sentence(e.message), e.code)
	}
	return nil
}

// batchStats are a batch's calls and billed units, for its log line.
type batchStats struct {
	calls, units atomic.Int64
}

// itemError is an entry of a call's ErrorList: the position of its text in the call.
type itemError struct {
	at            int
	code, message string
}

// score makes one BatchDetectSentiment call, puts the scores it answers into out and
// returns the texts it reports errors for.
func (f *Function) score(ctx context.Context, c call, out []any, stats *batchStats) ([]itemError, error) {
	texts := make([]string, len(c.docs))
	for i, d := range c.docs {
		texts[i] = d.text
	}
	resp, err := f.client.BatchDetectSentiment(ctx, &comprehend.BatchDetectSentimentInput{LanguageCode: c.language, TextList: texts})
	stats.calls.Add(1)
	if err != nil {
		f.calls.WithLabelValues("error").Inc()
		return nil, callError(ctx, c.language, err)
	}
	f.calls.WithLabelValues("ok").Inc()
	if len(resp.ResultList)+len(resp.ErrorList) != len(c.docs) {
		return nil, failure(asyncfn.Internal, "Amazon Comprehend answered BatchDetectSentiment for %d texts with %d results and %d errors.",
			len(c.docs), len(resp.ResultList), len(resp.ErrorList))
	}
	at := func(index *int32) (int, error) {
		if index == nil || *index < 0 || int(*index) >= len(c.docs) {
			return 0, failure(asyncfn.Internal, "Amazon Comprehend answered BatchDetectSentiment with an index outside the texts it was sent.")
		}
		return int(*index), nil
	}
	for _, r := range resp.ResultList {
		i, err := at(r.Index)
		if err != nil {
			return nil, err
		}
		d := c.docs[i]
		s := sentiment.Comprehend{}
		if sc := r.SentimentScore; sc != nil {
			s = sentiment.Comprehend{Positive: float(sc.Positive), Negative: float(sc.Negative), Neutral: float(sc.Neutral), Mixed: float(sc.Mixed)}
		}
		if f.cfg.Label {
			s.Sentiment = string(r.Sentiment)
		}
		out[d.index] = s
		u := billedUnits(d.text)
		f.units.Add(float64(u))
		stats.units.Add(int64(u))
	}
	var failed []itemError
	for _, e := range resp.ErrorList {
		i, err := at(e.Index)
		if err != nil {
			return nil, err
		}
		failed = append(failed, itemError{at: i, code: aws.ToString(e.ErrorCode), message: aws.ToString(e.ErrorMessage)})
	}
	return failed, nil
}

// float widens one of Comprehend's float32 scores exactly: the digits boto3 shows for it.
func float(p *float32) float64 {
	if p == nil {
		return 0
	}
	return float64(*p)
}

// callError turns a failed call into the batch's error: a language Comprehend refuses is
// the rows' fault (400); a call the SDK gave up retrying (throttled, 5xx, timed out) is
// worth a later attempt; anything else (credentials, permissions) fails the batch with
// Comprehend's reason.
func callError(ctx context.Context, lang types.LanguageCode, err error) error {
	var unsupported *types.UnsupportedLanguageException
	var maxAttempts *retry.MaxAttemptsError
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.As(err, &unsupported):
		return asyncfn.InvalidInputf("Amazon Comprehend does not detect sentiment in language %q here: %s.", lang, sentence(unsupported.ErrorMessage()))
	case errors.As(err, &maxAttempts):
		return failure(asyncfn.Retryable, "Amazon Comprehend did not answer BatchDetectSentiment in %d attempts; the last: %s.", maxAttempts.Attempt, reason(maxAttempts.Err))
	}
	return failure(asyncfn.Internal, "Amazon Comprehend refused BatchDetectSentiment: %s.", reason(err))
}

// reason is the gist of a failed call: Comprehend's status, code and message, or the
// SDK's error (no credentials, no connection).
func reason(err error) string {
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) {
		return err.Error()
	}
	var respErr *awshttp.ResponseError
	if errors.As(err, &respErr) {
		return fmt.Sprintf("%d %s %s", respErr.HTTPStatusCode(), apiErr.ErrorCode(), sentence(apiErr.ErrorMessage()))
	}
	return apiErr.ErrorCode() + " " + sentence(apiErr.ErrorMessage())
}

// sentence is one of Comprehend's messages without its final period, to end a sentence
// of ours.
func sentence(msg string) string {
	return strings.TrimSuffix(msg, ".")
}

// failure returns a batch's error of kind with a message for the SQL user.
func failure(kind asyncfn.ErrorKind, format string, args ...any) error {
	return &asyncfn.Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}
