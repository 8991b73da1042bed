package asyncfn

import (
	"context"
	"maps"
	"strings"
)

// KeepHeader reports whether a request header, by lower-case name, is kept with its batch
// for the function (Batch.Headers): Snowflake's own headers that name the batch, the query
// and the function (batch and query ids, name, signature and return type, each with its
// -base64 twin), its custom headers (a function's HEADERS clause, as sf-custom-NAME) but
// not the API key, its context headers (CONTEXT_HEADERS, as sf-context-NAME), and the W3C
// trace context. An upstream that serves the function is sent them as Snowflake sent
// them (package upstream). The format headers are not kept: they are constant.
func KeepHeader(name string) bool {
	switch {
	case name == HeaderAPIKey, name == HeaderFormat, name == HeaderFormatVersion:
		return false
	case strings.HasPrefix(name, HeaderCustomPrefix), strings.HasPrefix(name, HeaderContextPrefix),
		strings.HasPrefix(name, headerFunctionPrefix), name == "traceparent", name == "tracestate":
		return true
	}
	return false
}

// Snowflake's request headers, by their lower-case names, as they arrive through its
// proxies (net/http's Header.Get finds them in any case).
const (
	// HeaderBatchID names the batch: the same on every retry of a POST and on its polls.
	HeaderBatchID        = "sf-external-function-query-batch-id"
	HeaderCurrentQueryID = "sf-external-function-current-query-id"
	HeaderQueryID        = "sf-external-function-query-id"
	HeaderFormat         = "sf-external-function-format"
	HeaderFormatVersion  = "sf-external-function-format-version"
	HeaderName           = "sf-external-function-name"
	HeaderSignature      = "sf-external-function-signature"
	HeaderReturnType     = "sf-external-function-return-type"
	headerFunctionPrefix = "sf-external-function-"
	// HeaderCustomPrefix starts each of the function's HEADERS, HeaderContextPrefix each
	// of its CONTEXT_HEADERS.
	HeaderCustomPrefix  = "sf-custom-"
	HeaderContextPrefix = "sf-context-"
	// HeaderAPIKey is how Snowflake sends the function's HEADERS = ('api-key' = '...').
	HeaderAPIKey = HeaderCustomPrefix + "api-key"
)

type headersKey struct{}

// WithHeaders returns ctx carrying a batch's headers, for RequestHeader.
func WithHeaders(ctx context.Context, headers map[string]string) context.Context {
	if len(headers) == 0 {
		return ctx
	}
	return context.WithValue(ctx, headersKey{}, headers)
}

// RequestHeader returns the value of a header of the request that brought the batch a
// function runs on, by name (any case), or "" if it was not sent or is not kept (see
// KeepHeader): RequestHeader(ctx, "sf-custom-language") is the function's HEADERS =
// ('language' = '...').
func RequestHeader(ctx context.Context, name string) string {
	h, _ := ctx.Value(headersKey{}).(map[string]string)
	return h[strings.ToLower(name)]
}

// RequestHeaders returns a copy of all the kept headers (see KeepHeader) of the request
// that brought the batch a function runs on, by lower-case name, or nil: for a function
// that passes them on without knowing their names (package upstream).
func RequestHeaders(ctx context.Context) map[string]string {
	h, _ := ctx.Value(headersKey{}).(map[string]string)
	return maps.Clone(h)
}
