package asyncfn

import (
	"context"
	"strings"
)

// KeepHeader reports whether a request header, by lower-case name, is kept with its batch
// for the function (Batch.Headers): Snowflake's custom headers (a function's HEADERS
// clause, as sf-custom-NAME) but not the API key, its context headers
// (CONTEXT_HEADERS, as sf-context-NAME), and the W3C trace context.
func KeepHeader(name string) bool {
	switch {
	case name == "sf-custom-api-key":
		return false
	case strings.HasPrefix(name, "sf-custom-"), strings.HasPrefix(name, "sf-context-"),
		name == "traceparent", name == "tracestate":
		return true
	}
	return false
}

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
