package http

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// requestError is a client's mistake: its status and one sentence for the SQL user.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &requestError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// readBody reads the request body, decompressing gzip or deflate, and fails with a
// requestError if it (decompressed) is larger than max bytes or encoded otherwise.
func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, error) {
	tooLarge := &requestError{http.StatusRequestEntityTooLarge, fmt.Sprintf(
		"the request body is over the service's limit of %s; lower the function's MAX_BATCH_ROWS.", formatBytes(max))}
	if r.ContentLength > max {
		return nil, tooLarge
	}
	raw := http.MaxBytesReader(w, r.Body, max)
	var body io.Reader
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
		body = raw
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(raw)
		if err != nil {
			return nil, decodeError(err, "gzip", tooLarge)
		}
		body = zr
	case "deflate":
		zr, err := newDeflateReader(raw)
		if err != nil {
			return nil, decodeError(err, "deflate", tooLarge)
		}
		body = zr
	default:
		return nil, &requestError{http.StatusUnsupportedMediaType, fmt.Sprintf(
			"the request's Content-Encoding %q is not supported; use gzip, deflate or none.", enc)}
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 && r.Header.Get("Content-Encoding") == "" {
		buf.Grow(int(r.ContentLength))
	}
	// One byte past the limit tells a body at the limit from a larger one.
	n, err := buf.ReadFrom(io.LimitReader(body, max+1))
	if err != nil {
		what := "the request body"
		if body != raw {
			what = strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding")))
		}
		return nil, decodeError(err, what, tooLarge)
	}
	if n > max {
		return nil, tooLarge
	}
	return buf.Bytes(), nil
}

// newDeflateReader reads HTTP's "deflate", which is zlib-wrapped by the standard but sent
// raw by some clients: the first two bytes tell which.
func newDeflateReader(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	head, err := br.Peek(2)
	if err != nil && len(head) < 2 {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if head[0]&0x0f == 8 && (uint16(head[0])<<8|uint16(head[1]))%31 == 0 {
		return zlib.NewReader(br)
	}
	return flate.NewReader(br), nil
}

func decodeError(err error, what string, tooLarge error) error {
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		return tooLarge
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
