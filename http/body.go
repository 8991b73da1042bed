package http

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/asyncfn/asyncfn/internal/wire"
)

// requestError is a client's mistake, or a request refused for now: its status, the
// reason it is counted under, and one sentence for the SQL user.
type requestError struct {
	status int
	reason string
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &requestError{http.StatusBadRequest, "bad_request", fmt.Sprintf(format, args...)}
}

func tooLarge(maxBytes int64) error {
	return &requestError{http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf(
		"the request body is over the service's limit of %s; lower the function's MAX_BATCH_ROWS.", formatBytes(maxBytes))}
}

var errBusyReading = &requestError{http.StatusTooManyRequests, "overloaded",
	"the service is reading too many request bodies at once; Snowflake will retry."}

// budget counts the bytes that request bodies hold, across requests, up to max.
type budget struct {
	max  int64
	used atomic.Int64
}

// take reserves n bytes if they fit and reports whether they did.
func (b *budget) take(n int64) bool {
	if b.used.Add(n) > b.max {
		b.used.Add(-n)
		return false
	}
	return true
}

// give returns n bytes taken.
func (b *budget) give(n int64) { b.used.Add(-n) }

// firstRead is the most a body's buffer reserves before its bytes arrive, whatever its
// Content-Length claims: a client may claim 16 MB and send 13 bytes.
const firstRead = 64 << 10

// readBody reads the request body, decompressing gzip or deflate, and fails with a
// requestError if it (decompressed) is larger than maxBytes, encoded otherwise, or if
// inflight has no room for it. The buffer grows as bytes arrive, each growth taken from
// inflight; it returns the bytes it holds taken, to give back when the request is done,
// also on error.
func readBody(w http.ResponseWriter, r *http.Request, maxBytes int64, inflight *budget) (body []byte, held int64, err error) {
	if r.ContentLength > maxBytes {
		return nil, 0, tooLarge(maxBytes)
	}
	raw := http.MaxBytesReader(w, r.Body, maxBytes)
	var in io.Reader
	enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding")))
	switch enc {
	case "", "identity":
		in, enc = raw, ""
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(raw)
		if err != nil {
			return nil, 0, decodeError(err, "gzip", maxBytes)
		}
		in = zr
	case "deflate":
		zr, err := wire.NewDeflateReader(raw)
		if err != nil {
			return nil, 0, decodeError(err, "deflate", maxBytes)
		}
		in = zr
	default:
		return nil, 0, &requestError{http.StatusUnsupportedMediaType, "unsupported_encoding", fmt.Sprintf(
			"the request's Content-Encoding %q is not supported; use gzip, deflate or none.", enc)}
	}
	// One byte past the limit tells a body at the limit from a larger one.
	limit := maxBytes + 1
	next := int64(firstRead)
	if enc == "" && r.ContentLength >= 0 {
		next = min(r.ContentLength+1, firstRead) // +1: room for the read that sees the end
	}
	for {
		if len(body) == cap(body) {
			grow := min(max(next, int64(cap(body))), limit-int64(cap(body))) // doubling
			if grow <= 0 {
				return nil, held, tooLarge(maxBytes)
			}
			if !inflight.take(grow) {
				return nil, held, errBusyReading
			}
			held += grow
			grown := make([]byte, len(body), cap(body)+int(grow))
			copy(grown, body)
			body = grown
		}
		n, err := in.Read(body[len(body):cap(body)])
		body = body[:len(body)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			what := "the request body"
			if enc != "" {
				what = enc
			}
			return nil, held, decodeError(err, what, maxBytes)
		}
	}
	if int64(len(body)) > maxBytes {
		return nil, held, tooLarge(maxBytes)
	}
	return body, held, nil
}

func decodeError(err error, what string, maxBytes int64) error {
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		return tooLarge(maxBytes)
	}
	if what == "the request body" {
		return badRequest("the request body could not be read: %v.", err)
	}
	return badRequest("the request body is not valid %s data: %v.", what, err)
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
