package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/memory"
	"github.com/asyncfn/asyncfn/metrics"
)

// failing is a store whose backend is down.
type failing struct {
	asyncfn.Store
	err error
}

func (f failing) Get(ctx context.Context, key asyncfn.Key, now time.Time, withPayload bool) (*asyncfn.Batch, error) {
	return nil, f.err
}

func (f failing) Stats(ctx context.Context, now time.Time) (asyncfn.Stats, error) {
	return asyncfn.Stats{}, f.err
}

func newMetrics(t *testing.T) *metrics.Metrics {
	reg, err := asyncfn.NewRegistry(asyncfn.Function{Name: "echo", Func: asyncfn.Echo})
	if err != nil {
		t.Fatal(err)
	}
	return metrics.New(reg)
}

func scrape(t *testing.T, m *metrics.Metrics) string {
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// TestStoreErrors: failures of the store are counted by operation; the contract's
// expected answers are not.
func TestStoreErrors(t *testing.T) {
	m := newMetrics(t)
	down := fmt.Errorf("dial tcp: connection refused: %w", asyncfn.ErrUnavailable)
	store := m.Store(failing{Store: memory.New(), err: down})
	m.WatchStore(store, time.Second)
	ctx := context.Background()
	store.Get(ctx, asyncfn.Key{Function: "echo", BatchID: "x"}, time.Now(), false)
	store.Get(ctx, asyncfn.Key{Function: "echo", BatchID: "y"}, time.Now(), false)
	scrape(t, m)         // its Stats fails too
	body := scrape(t, m) // and shows the first scrape's failure
	for _, want := range []string{
		`asyncfn_store_errors_total{operation="get"} 2` + "\n",
		`asyncfn_store_errors_total{operation="stats"} `,
		`asyncfn_store_up 0` + "\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("no %q in:\n%s", want, grep(body, "asyncfn_store"))
		}
	}

	m = newMetrics(t)
	store = m.Store(failing{Store: memory.New(), err: asyncfn.ErrNotFound})
	store.Get(ctx, asyncfn.Key{Function: "echo", BatchID: "x"}, time.Now(), false)
	if body := scrape(t, m); !strings.Contains(body, `asyncfn_store_errors_total{operation="get"} 0`+"\n") {
		t.Errorf("ErrNotFound counted as a store error:\n%s", grep(body, "asyncfn_store_errors_total"))
	}
}

// TestStoreErrorsStartAtZero: every operation's error count is exported at 0 before the
// first error, so that an alert on its rise sees the first one.
func TestStoreErrorsStartAtZero(t *testing.T) {
	m := newMetrics(t)
	m.Store(memory.New())
	body := scrape(t, m)
	for _, op := range []string{"create", "claim", "finish", "save_payload", "ping"} {
		if want := `asyncfn_store_errors_total{operation="` + op + `"} 0` + "\n"; !strings.Contains(body, want) {
			t.Errorf("no %q before any error in:\n%s", want, grep(body, "asyncfn_store_errors_total"))
		}
	}
}

// TestMethodLabel (correctness issue, defect 3): methods invented by a client share one
// label value, so that they cannot grow /metrics without bound.
func TestMethodLabel(t *testing.T) {
	m := newMetrics(t)
	for i := range 100 {
		r := httptest.NewRequest("GET", "/echo", nil)
		r.Method = fmt.Sprintf("M%d", i)
		m.ObserveHTTP(r, http.StatusMethodNotAllowed, time.Millisecond)
	}
	m.ObserveHTTP(httptest.NewRequest("POST", "/echo", nil), http.StatusAccepted, time.Millisecond)
	if n := series(t, m, "asyncfn_http_responses_total"); n != 2 {
		t.Errorf("%d series of responses for 100 invented methods and a POST, want 2", n)
	}
	if body := scrape(t, m); !strings.Contains(body, `asyncfn_http_responses_total{code="405",method="other"} 100`) {
		t.Errorf("invented methods not counted as other:\n%s", grep(body, "asyncfn_http_responses_total"))
	}
}

// TestStoreKeepsNotifier: wrapping a store that notifies keeps it a Notifier, and one
// that does not, not one.
func TestStoreKeepsNotifier(t *testing.T) {
	m := newMetrics(t)
	if _, ok := m.Store(memory.New()).(asyncfn.Notifier); ok {
		t.Errorf("the memory store became a Notifier")
	}
	if _, ok := m.Store(notifier{memory.New()}).(asyncfn.Notifier); !ok {
		t.Errorf("a Notifier store lost its Listen")
	}
}

type notifier struct{ asyncfn.Store }

func (notifier) Listen(ctx context.Context, fn func(asyncfn.Event)) error { return errors.New("no") }

// TestUnknownFunctionLabel: routes that serve no function share one label value, so
// probing random paths cannot grow the series.
func TestUnknownFunctionLabel(t *testing.T) {
	m := newMetrics(t)
	for i := range 50 {
		m.BatchRejected(fmt.Sprintf("probe-%d", i), "unknown_function")
	}
	if n := series(t, m, "asyncfn_batches_rejected_total"); n != 1 {
		t.Errorf("%d series for 50 unknown routes, want 1", n)
	}
	if !strings.Contains(scrape(t, m), `asyncfn_batches_rejected_total{function="unknown",reason="unknown_function"} 50`) {
		t.Errorf("the rejections are not counted under function=%q", metrics.Unknown)
	}
}

func grep(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// series counts the series of the metric name.
func series(t *testing.T, m *metrics.Metrics, name string) int {
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return len(f.GetMetric())
		}
	}
	return 0
}
