package upstream_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/caller"
	asyncfnhttp "github.com/asyncfn/asyncfn/http"
	"github.com/asyncfn/asyncfn/memory"
	"github.com/asyncfn/asyncfn/upstream"
)

// TestThroughRuntime: upstream functions served by a real runtime behind its HTTP front
// end, called as Snowflake calls them (package caller): an upstream slower than any
// gateway (3 s) gives its exact rows while the front end answers the polls 202, with
// the query's custom and context headers passed on; the upstream's misbehaviour reaches
// the SQL user with the status and message of the package documentation.
func TestThroughRuntime(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var slowHeader http.Header
	slow, _ := server(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		slowHeader = r.Header.Clone()
		mu.Unlock()
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
			return
		}
		echo(w, r)
	})
	reject, _ := server(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		http.Error(w, "Row 1 is not a number.", http.StatusBadRequest)
	})
	badRows, _ := server(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"data":[[0,"only one"]]}`)
	})
	busy, busySent := server(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	})
	var fns []asyncfn.Function
	for name, url := range map[string]string{"slow": slow.URL, "reject": reject.URL, "badrows": badRows.URL, "busy": busy.URL} {
		fn := newFunction(t, url, func(c *upstream.Config) {
			c.Name = name
			c.Headers = map[string]string{"sf-custom-api-key": "k-123"}
		}).Function()
		fn.Backoff = 10 * time.Millisecond // between the batch's attempts
		fns = append(fns, fn)
	}
	reg, err := asyncfn.NewRegistry(fns...)
	if err != nil {
		t.Fatal(err)
	}
	cfg := asyncfn.DefaultRuntimeConfig()
	cfg.Workers = 4
	cfg.Service.SyncWait, cfg.Service.PollWait = 100*time.Millisecond, 200*time.Millisecond
	rt, err := asyncfn.NewRuntime(memory.New(), reg, discard, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rt.Start(t.Context())
	t.Cleanup(rt.Stop)
	front := httptest.NewServer(asyncfnhttp.NewHandler(rt.Service(), discard, asyncfnhttp.Config{}))
	t.Cleanup(front.Close)

	call := func(name string, rows ...caller.Row) (caller.Answer, error) {
		client, err := caller.NewClient(caller.Config{
			URL: front.URL + "/" + name, WaitForService: true, Timeout: time.Minute,
			CustomHeaders:  map[string]string{"language": "fr"},
			ContextHeaders: map[string]string{"current_user": "ALICE"},
		})
		if err != nil {
			t.Fatal(err)
		}
		p, err := client.Encode(rows)
		if err != nil {
			t.Fatal(err)
		}
		return client.Call(context.Background(), p)
	}
	text := caller.TextValue
	t.Run("slow", func(t *testing.T) {
		t.Parallel()
		a, err := call("slow", caller.Row{text("a")}, caller.Row{text(`"quoted" é`)}, caller.Row{[]byte("null")})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(a.Values[0]) + " " + string(a.Values[1]) + " " + string(a.Values[2]); got != `"a" "\"quoted\" é" null` {
			t.Fatalf("values %s", got)
		}
		if len(a.Stats.Gets) == 0 {
			t.Fatal("answered without a poll: the front end did not answer 202 meanwhile")
		}
		mu.Lock()
		defer mu.Unlock()
		for name, want := range map[string]string{"sf-custom-language": "fr", "sf-context-current_user": "ALICE", "sf-custom-api-key": "k-123"} {
			if got := slowHeader.Get(name); got != want {
				t.Errorf("the upstream got %s = %q, want %q", name, got, want)
			}
		}
	})
	for _, tt := range []struct {
		name   string
		status int
		detail string
	}{
		{"reject", http.StatusBadRequest, "the upstream " + reject.URL + " rejected the rows: 400 Bad Request: Row 1 is not a number."},
		{"badrows", http.StatusUnprocessableEntity, "the upstream " + badRows.URL + " sent a bad answer: 2 rows were sent, 1 came back."},
		{"busy", http.StatusUnprocessableEntity, "the function busy failed 3 times, the most allowed; the last error: the upstream " + busy.URL +
			" answered 503 Service Unavailable: overloaded, 3 times in a row."},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := call(tt.name, caller.Row{text("x")}, caller.Row{text("y")})
			var be *caller.BatchError
			if !errors.As(err, &be) || be.Status != tt.status || be.Detail != tt.detail {
				t.Fatalf("error %v,\nwant  %d %q", err, tt.status, tt.detail)
			}
		})
	}
	t.Cleanup(func() {
		// Run after the subtests: each of the 3 attempts sent its request 3 times.
		if n := busySent.Load(); n != 9 && !t.Failed() {
			t.Errorf("the busy upstream got %d requests, want 9", n)
		}
	})
}
