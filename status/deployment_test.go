package status_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/memory"
	"github.com/asyncfn/asyncfn/status"
)

// counted is a memory store that counts the page's reads.
type counted struct {
	*memory.Store
	stats, overviews atomic.Int32
}

func (c *counted) Stats(ctx context.Context, now time.Time) (asyncfn.Stats, error) {
	c.stats.Add(1)
	return c.Store.Stats(ctx, now)
}

func (c *counted) Overview(ctx context.Context, now time.Time, p asyncfn.OverviewParams) (*asyncfn.Overview, error) {
	c.overviews.Add(1)
	return c.Store.Overview(ctx, now, p)
}

// clock is a settable time for a recorder.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// put stores a batch of fn created at created, finished at finished unless that is zero
// (failed with message if it is not empty).
func put(t *testing.T, s asyncfn.Store, fn, id string, created, finished time.Time, message string) {
	t.Helper()
	key := asyncfn.Key{Function: fn, BatchID: id}
	b := &asyncfn.Batch{Key: key, State: asyncfn.Queued, Payload: []byte(`{"data":[[0,1],[1,2],[2,3]]}`), Digest: "d", Rows: 3,
		MaxAttempts: 1, CreatedAt: created, ExpiresAt: created.Add(time.Hour)}
	if _, err := s.Create(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if finished.IsZero() {
		return
	}
	if _, err := s.ClaimKey(context.Background(), key, asyncfn.ClaimParams{Owner: "other process", Now: finished, Lease: time.Minute}); err != nil {
		t.Fatal(err)
	}
	p := asyncfn.Succeed(finished, []byte(`{"data":[]}`))
	if message != "" {
		p = asyncfn.Fail(finished, &asyncfn.Error{Kind: asyncfn.InvalidInput, Message: message})
	}
	if err := s.Finish(context.Background(), key, "other process", p); err != nil {
		t.Fatal(err)
	}
}

// The deployment section shows what the store holds, whichever process did it, beside
// this process's own figures, and reads the store once per StoreTTL however many
// viewers ask at once.
func TestDeployment(t *testing.T) {
	t.Parallel()
	reg, _ := asyncfn.NewRegistry(asyncfn.Function{Name: "f", Func: asyncfn.Echo})
	store := &counted{Store: memory.New()}
	r := status.New(reg, store)
	c := &clock{t: time.Now()}
	status.SetClock(r, c.now)
	now := c.now()
	put(t, store, "f", "queued", now.Add(-90*time.Second), time.Time{}, "")
	put(t, store, "g", "done", now.Add(-time.Minute), now.Add(-10*time.Second), "")
	put(t, store, "g", "bad", now.Add(-time.Minute), now.Add(-5*time.Second), "row 2 is <b>not</b> a date.")
	// This process finished one batch of f.
	r.BatchStarted(asyncfn.RunInfo{Key: asyncfn.Key{Function: "f", BatchID: "here"}})
	r.BatchFinished(asyncfn.RunInfo{Key: asyncfn.Key{Function: "f", BatchID: "here"}, Rows: 4, Outcome: asyncfn.OutcomeSucceeded})

	var wg sync.WaitGroup
	snaps := make([]status.Snapshot, 20)
	for i := range snaps {
		wg.Go(func() { snaps[i] = r.Snapshot(context.Background()) })
	}
	wg.Wait()
	if n, m := store.overviews.Load(), store.stats.Load(); n != 1 || m != 1 {
		t.Errorf("20 viewers at once read the overview %d times and the counts %d times, want once each", n, m)
	}
	d := snaps[7].Deployment
	if !d.Available || d.Error != "" || d.Queued != 1 || d.Running != 0 || d.Succeeded != 1 || d.Failed != 1 || d.Rows != 3 ||
		d.WindowSeconds != 60 || d.OldestQueuedSeconds < 89 || d.OldestQueuedSeconds > 91 {
		t.Errorf("deployment = %+v", d)
	}
	if d.RowsPerSec != 3.0/60 {
		t.Errorf("deployment rows per second %g, want %g", d.RowsPerSec, 3.0/60)
	}
	if len(d.Functions) != 2 || d.Functions[0].Name != "f" || d.Functions[0].Queued != 1 || d.Functions[1].Name != "g" || d.Functions[1].Succeeded != 1 {
		t.Errorf("deployment functions = %+v", d.Functions)
	}
	if len(d.Failures) != 1 || d.Failures[0].BatchID != "bad" || d.Failures[0].Kind != string(asyncfn.InvalidInput) || d.Failures[0].Attempts != 1 {
		t.Errorf("deployment failures = %+v", d.Failures)
	}
	if p := d.This; p.Succeeded != 1 || p.Rows != 4 || p.Failed != 0 || p.Running != 0 {
		t.Errorf("this process = %+v, want the one batch of 4 rows it finished", p)
	}

	// Within StoreTTL the figures come from the cache; after it, from the store again.
	put(t, store, "f", "later", c.now(), time.Time{}, "")
	c.add(status.StoreTTL - time.Millisecond)
	d = r.Snapshot(context.Background()).Deployment
	if d.Queued != 1 || store.overviews.Load() != 1 {
		t.Errorf("within StoreTTL: %d queued, %d reads; want the cached 1 and 1 read", d.Queued, store.overviews.Load())
	}
	if age := 90 + (status.StoreTTL - time.Millisecond).Seconds(); d.OldestQueuedSeconds < age-1 || d.OldestQueuedSeconds > age+1 ||
		d.Functions[0].OldestQueuedSeconds != d.OldestQueuedSeconds {
		t.Errorf("from the cache, the oldest queued batch waited %g s (function f: %g s), want about %g s: the time since the read counts",
			d.OldestQueuedSeconds, d.Functions[0].OldestQueuedSeconds, age)
	}
	c.add(time.Millisecond)
	if d := r.Snapshot(context.Background()).Deployment; d.Queued != 2 || store.overviews.Load() != 2 {
		t.Errorf("after StoreTTL: %d queued, %d reads; want 2 and 2", d.Queued, store.overviews.Load())
	}

	// The page shows it, escaped, in the JSON too.
	w := httptest.NewRecorder()
	r.Routes(nil)["GET /status"].ServeHTTP(w, httptest.NewRequest("GET", "/status", nil))
	body := w.Body.String()
	for _, want := range []string{`<td class="n" id="d-queued">2</td>`, `<tr id="dep-fn-g"><td>/g</td>`,
		`<td class="msg">row 2 is &lt;b&gt;not&lt;/b&gt; a date.</td>`, `<td class="n" id="p-succeeded">1</td>`} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	w = httptest.NewRecorder()
	r.Routes(nil)["GET /status.json"].ServeHTTP(w, httptest.NewRequest("GET", "/status.json", nil))
	var s status.Snapshot
	if err := json.Unmarshal(w.Body.Bytes(), &s); err != nil || s.Deployment.Queued != 2 || len(s.Deployment.Failures) != 1 {
		t.Errorf("/status.json deployment: %v %+v", err, s.Deployment)
	}
}

// A store that cannot be read leaves a clear note and the rest of the page, read again
// only after StoreTTL; a store that gives no overview says so.
func TestDeploymentStoreDown(t *testing.T) {
	t.Parallel()
	reg, _ := asyncfn.NewRegistry(asyncfn.Function{Name: "f", Func: asyncfn.Echo})
	store := &counted{Store: memory.New()}
	store.Close()
	r := status.New(reg, store)
	r.BatchFinished(asyncfn.RunInfo{Key: asyncfn.Key{Function: "f", BatchID: "here"}, Rows: 4, Outcome: asyncfn.OutcomeSucceeded})
	w := httptest.NewRecorder()
	r.Routes(nil)["GET /status"].ServeHTTP(w, httptest.NewRequest("GET", "/status", nil))
	body := w.Body.String()
	note := "The deployment&#39;s figures could not be read from the store (it is closed); this process&#39;s own figures are still shown."
	if w.Code != 200 || !strings.Contains(body, note) || !strings.Contains(body, `<td class="n" id="p-succeeded">1</td>`) {
		t.Errorf("with the store closed: %d, want the page with the note %q and this process's figures:\n%s", w.Code, note, body)
	}
	r.Snapshot(context.Background())
	if n := store.overviews.Load(); n != 1 {
		t.Errorf("a failing store was read %d times within StoreTTL, want once", n)
	}

	type plain struct{ asyncfn.Store } // hides Overview
	r = status.New(reg, plain{memory.New()})
	if d := r.Snapshot(context.Background()).Deployment; d.Available || d.Error != "" {
		t.Errorf("deployment from a store without Overview: %+v", d)
	}
	w = httptest.NewRecorder()
	r.Routes(nil)["GET /status"].ServeHTTP(w, httptest.NewRequest("GET", "/status", nil))
	if !strings.Contains(w.Body.String(), "This store gives no deployment overview") {
		t.Errorf("the page does not say the store gives no overview")
	}
}
