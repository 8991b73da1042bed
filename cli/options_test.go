package cli_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/cli"
)

// countAccepted counts the batches an observer is told were accepted.
type countAccepted struct {
	asyncfn.NopObserver
	n atomic.Int32
}

func (c *countAccepted) BatchAccepted(asyncfn.AcceptInfo) { c.n.Add(1) }

// TestOptions: a binary built on cli.Main adds function middleware, HTTP middleware and
// observers without forking the command: each takes part in a batch's life, and HTTP
// middleware sits inside authentication.
func TestOptions(t *testing.T) {
	t.Parallel()
	upper := func(f asyncfn.Function) asyncfn.Function {
		inner := f.Func
		f.Func = asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
			out, err := inner.Call(ctx, rows)
			for i, v := range out {
				out[i] = strings.ToUpper(strings.Trim(string(v.([]byte)), `"`))
			}
			return out, err
		})
		return f
	}
	var seen atomic.Int32
	stamp := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen.Add(1)
			w.Header().Set("X-Middleware", "yes")
			next.ServeHTTP(w, r)
		})
	}
	obs := &countAccepted{}
	key := "0123456789abcdef0123456789abcdef"
	s, err := runMainWith(t, []string{"serve", "--addr", "127.0.0.1:0", "--store", filepath.Join(t.TempDir(), "a.db"), "--api-key", key, "--sync-wait", "5s"}, nil,
		cli.Options{
			Functions: []asyncfn.Function{{Name: "echo", Func: asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
				out := make([]any, len(rows))
				for i, r := range rows {
					out[i] = []byte(r.Args[0])
				}
				return out, nil
			})}},
			FunctionMiddleware: []asyncfn.Middleware{upper},
			HTTPMiddleware:     []func(http.Handler) http.Handler{stamp},
			Observers:          []asyncfn.Observer{obs},
		})
	if err != nil {
		t.Fatal(err)
	}
	if r := s.do(http.MethodPost, "/echo", strings.NewReader(`{"data":[[0,"abc"]]}`), sfHeaders("echo", "b1")...); r.Status != http.StatusUnauthorized || seen.Load() != 0 {
		t.Errorf("POST without a key = %v, middleware saw %d requests; want 401 and none", r, seen.Load())
	}
	r := s.do(http.MethodPost, "/echo", strings.NewReader(`{"data":[[0,"abc"]]}`), sfHeaders("echo", "b1", "authorization", "Bearer "+key)...)
	if r.Status != http.StatusOK || r.Body != `{"data":[[0,"ABC"]]}` || r.Header.Get("X-Middleware") != "yes" {
		t.Errorf("POST = %v (X-Middleware %q), want 200 with the row upper-cased by the function middleware and the header of the HTTP middleware", r, r.Header.Get("X-Middleware"))
	}
	if n := obs.n.Load(); n != 1 {
		t.Errorf("the observer was told of %d accepted batches, want 1", n)
	}
}
