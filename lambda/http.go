package lambda

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/aws/aws-lambda-go/events"
)

// MaxResponseBytes is the largest response a Lambda function can return to a synchronous
// invocation (API Gateway's, a function URL's), the JSON envelope included.
const MaxResponseBytes = 6 << 20

// proxyRequest is an HTTP request as the proxy events carry it.
type proxyRequest struct {
	method, path, rawQuery string
	header                 http.Header
	body                   string
	base64                 bool
	sourceIP               string
}

// serveV1 answers an API Gateway REST API proxy event (payload format 1.0).
func (h *Handler) serveV1(ctx context.Context, event json.RawMessage) (any, error) {
	var e events.APIGatewayProxyRequest
	if err := json.Unmarshal(event, &e); err != nil {
		return nil, fmt.Errorf("asyncfn: API Gateway REST event: %w", err)
	}
	// The multi-value maps hold every value; the single-value ones only the last of each.
	header := http.Header{}
	if len(e.MultiValueHeaders) > 0 {
		for k, vs := range e.MultiValueHeaders {
			for _, v := range vs {
				header.Add(k, v)
			}
		}
	} else {
		for k, v := range e.Headers {
			header.Add(k, v)
		}
	}
	query := url.Values(e.MultiValueQueryStringParameters)
	if len(query) == 0 {
		query = url.Values{}
		for k, v := range e.QueryStringParameters {
			query.Set(k, v)
		}
	}
	rec, err := h.serve(ctx, proxyRequest{
		method: e.HTTPMethod, path: routePath(e.Path, e.PathParameters), rawQuery: query.Encode(),
		header: header, body: e.Body, base64: e.IsBase64Encoded, sourceIP: e.RequestContext.Identity.SourceIP,
	})
	if err != nil {
		return nil, err
	}
	body, isBase64 := rec.encodedBody()
	return events.APIGatewayProxyResponse{StatusCode: rec.status, MultiValueHeaders: rec.header, Body: body, IsBase64Encoded: isBase64}, nil
}

// serveV2 answers an HTTP API event (payload format 2.0) or a function URL request, which
// share that shape; their responses differ only in the fields the function URL lacks.
func (h *Handler) serveV2(ctx context.Context, event json.RawMessage, functionURL bool) (any, error) {
	var e events.APIGatewayV2HTTPRequest
	if err := json.Unmarshal(event, &e); err != nil {
		return nil, fmt.Errorf("asyncfn: HTTP API or function URL event: %w", err)
	}
	// Header names arrive in lower case, several values joined with commas, and cookies
	// apart.
	header := http.Header{}
	for k, v := range e.Headers {
		header.Add(k, v)
	}
	if len(e.Cookies) > 0 {
		header.Set("Cookie", strings.Join(e.Cookies, "; "))
	}
	rec, err := h.serve(ctx, proxyRequest{
		method: e.RequestContext.HTTP.Method, path: routePath(e.RawPath, e.PathParameters), rawQuery: e.RawQueryString,
		header: header, body: e.Body, base64: e.IsBase64Encoded, sourceIP: e.RequestContext.HTTP.SourceIP,
	})
	if err != nil {
		return nil, err
	}
	body, isBase64 := rec.encodedBody()
	headers := map[string]string{}
	var cookies []string
	for k, vs := range rec.header {
		if k == "Set-Cookie" {
			cookies = vs
			continue
		}
		headers[k] = strings.Join(vs, ", ")
	}
	if functionURL {
		return events.LambdaFunctionURLResponse{StatusCode: rec.status, Headers: headers, Body: body, IsBase64Encoded: isBase64, Cookies: cookies}, nil
	}
	return events.APIGatewayV2HTTPResponse{StatusCode: rec.status, Headers: headers, Body: body, IsBase64Encoded: isBase64, Cookies: cookies}, nil
}

// routePath returns the path to route: the {proxy+} path parameter when the request came
// through a greedy proxy resource (it leaves out a custom domain's base path and an HTTP
// API's stage prefix, which the raw path keeps), else the event's path.
func routePath(path string, params map[string]string) string {
	if p, ok := params["proxy"]; ok {
		return "/" + p
	}
	return path
}

// serve builds the *http.Request the event describes, serves it and records the answer.
func (h *Handler) serve(ctx context.Context, p proxyRequest) (*recorder, error) {
	body := []byte(p.body)
	if p.base64 {
		b, err := base64.StdEncoding.DecodeString(p.body)
		if err != nil {
			return nil, fmt.Errorf("asyncfn: the event's body is not valid base64: %w", err)
		}
		body = b
	} else {
		// A proxy passes a body as text only once it has decoded it: API Gateway decompresses
		// gzip and deflate bodies yet keeps their Content-Encoding header, which would make
		// the handler decompress them again.
		p.header.Del("Content-Encoding")
	}
	u := &url.URL{Path: p.path, RawQuery: p.rawQuery}
	r, err := http.NewRequestWithContext(ctx, p.method, u.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("asyncfn: the event's request: %w", err)
	}
	r.Header = p.header
	r.Host = p.header.Get("Host")
	r.RequestURI = u.RequestURI()
	r.RemoteAddr = p.sourceIP
	rec := &recorder{header: http.Header{}}
	h.HTTP.ServeHTTP(rec, r)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	rec.fit()
	return rec, nil
}

// recorder is the http.ResponseWriter of an event: it keeps the whole answer, which the
// event's response carries.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(p)
}

// encodedBody returns the body as the response's string: as it is when it is UTF-8 text,
// else base64-encoded (isBase64 true), which the proxy decodes.
func (r *recorder) encodedBody() (body string, isBase64 bool) {
	if utf8.Valid(r.body.Bytes()) {
		return r.body.String(), false
	}
	return base64.StdEncoding.EncodeToString(r.body.Bytes()), true
}

// fit replaces an answer too large for Lambda to return by a short error: past the limit
// Lambda fails the invocation, API Gateway answers 502, and Snowflake would retry the poll
// until the query times out instead of failing it at once with the reason. 422, as for a
// failed batch: the same poll can never succeed.
func (r *recorder) fit() {
	// The body dominates the envelope; 64 KB is room for the status and the headers.
	const room = 64 << 10
	body, _ := r.encodedBody()
	encoded, _ := json.Marshal(body) // as lambda.Start encodes it, HTML escaped
	if len(encoded)+room <= MaxResponseBytes {
		return
	}
	size := r.body.Len()
	r.header = http.Header{"Content-Type": {"text/plain; charset=utf-8"}}
	r.status = http.StatusUnprocessableEntity
	r.body.Reset()
	fmt.Fprintf(&r.body, "the answer is %.1f MB, over the %d MB that AWS Lambda can return; lower the external function's MAX_BATCH_ROWS.",
		float64(size)/(1<<20), MaxResponseBytes>>20)
}
