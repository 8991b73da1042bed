package caller

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/internal/wire"
)

// BaselineHandler is the cheapest correct external function: synchronous, it decodes the
// batch with asyncfn.ParseRows, echoes each row's first argument and answers 200 on the
// POST with asyncfn.EncodeResult. Benchmarks compare a service against it to see what
// the asynchronous machinery costs.
func BaselineHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "the baseline answers POST only", http.StatusMethodNotAllowed)
			return
		}
		body, err := readRequestBody(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rows, err := asyncfn.ParseRows(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		values := make([]any, len(rows))
		for i, row := range rows {
			if len(row.Args) > 0 {
				values[i] = row.Args[0]
			}
		}
		out, err := asyncfn.EncodeResult(rows, values)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	})
}

// maxRequestBytes is generous: the baseline must never be what fails a benchmark.
const maxRequestBytes = 64 << 20

// readRequestBody reads a request body, decompressed per its Content-Encoding.
func readRequestBody(r *http.Request) ([]byte, error) {
	var in io.Reader = r.Body
	switch strings.ToLower(r.Header.Get("Content-Encoding")) {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(in)
		if err != nil {
			return nil, err
		}
		in = zr
	case "deflate":
		zr, err := wire.NewDeflateReader(in)
		if err != nil {
			return nil, err
		}
		in = zr
	default:
		return nil, errors.New("unsupported Content-Encoding")
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(in, maxRequestBytes+1)); err != nil {
		return nil, err
	}
	if buf.Len() > maxRequestBytes {
		return nil, errors.New("the request body is over 64 MB")
	}
	return buf.Bytes(), nil
}

// Baseline is a BaselineHandler listening on loopback.
type Baseline struct {
	// URL to call, http://127.0.0.1:<port>/echo.
	URL    string
	server *http.Server
	done   chan error
}

// StartBaseline serves BaselineHandler on 127.0.0.1 at a free port until Close.
func StartBaseline() (*Baseline, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &Baseline{
		URL:    "http://" + ln.Addr().String() + "/echo",
		server: &http.Server{Handler: BaselineHandler(), ReadHeaderTimeout: time.Minute},
		done:   make(chan error, 1),
	}
	go func() { b.done <- b.server.Serve(ln) }()
	return b, nil
}

// Close stops the server and its connections.
func (b *Baseline) Close() error {
	err := b.server.Close()
	if serveErr := <-b.done; !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return err
}
