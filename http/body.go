package http

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/asyncfn/asyncfn/internal/budget"
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

// firstRead is the most a body's buffer reserves before its bytes arrive, whatever its
// Content-Length claims: a client may claim 16 MB and send 13 bytes.
const firstRead = 64 << 10

// readBody reads the request body, decompressing gzip or deflate, and fails with a
// requestError if it (decompressed) is larger than maxBytes, encoded otherwise, or if
// inflight has no room for it. The buffer grows as bytes arrive, each growth taken from
// inflight; it returns the bytes it holds taken, to give back when the request is done,
// also on error.
func readBody(w http.ResponseWriter, r *http.Request, maxBytes int64, inflight *budget.Budget) (body []byte, held int64, err error) {
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
	first := int64(firstRead)
	declared := enc == "" && r.ContentLength >= 0
	if declared {
		first = min(r.ContentLength+1, firstRead) // +1: room for the read that sees the end
	}
	for {
		if len(body) == cap(body) {
			grow := max(first, int64(cap(body))) // doubling
			if declared && cap(body) > 0 {
				// Once bytes came, the declared length is believed up to 4 times them:
				// a doubling buffer would copy a large body more than once.
				grow = max(grow, min(r.ContentLength+1-int64(cap(body)), 3*int64(cap(body))))
			}
			grow = min(grow, limit-int64(cap(body)))
			if grow <= 0 {
				return nil, held, tooLarge(maxBytes)
			}
			if !inflight.TryTake(grow) {
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
