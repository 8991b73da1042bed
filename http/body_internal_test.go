package http

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/asyncfn/asyncfn/internal/budget"
)

// TestReadBodyGrowth: a body of a declared length is read into one buffer grown once past
// its first bytes, rather than doubled and copied; a length declared but not sent
// reserves at most 4 times the bytes that came.
func TestReadBodyGrowth(t *testing.T) {
	t.Parallel()
	sent := bytes.Repeat([]byte("x"), 200<<10)
	for _, c := range []struct {
		name     string
		declared int64
		maxHeld  int64
	}{
		{"honest", int64(len(sent)), int64(len(sent)) + 1},
		{"claims a megabyte", 1 << 20, 4 * int64(len(sent))},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest(http.MethodPost, "/f", io.NopCloser(bytes.NewReader(sent)))
			r.ContentLength = c.declared
			inflight := budget.New(64 << 20)
			body, held, err := readBody(httptest.NewRecorder(), r, 16<<20, inflight)
			if err != nil || !bytes.Equal(body, sent) {
				t.Fatalf("read %d bytes, %v; want the %d sent", len(body), err, len(sent))
			}
			if held > c.maxHeld {
				t.Errorf("held %d bytes for %d sent, want at most %d", held, len(sent), c.maxHeld)
			}
			if c.declared == int64(len(sent)) && int64(cap(body)) != held {
				t.Errorf("buffer of %d bytes, held %d: want one buffer of what was held", cap(body), held)
			}
		})
	}
}
