package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
)

// RunOverview runs the conformance suite of asyncfn.Overviewer on stores from newStore,
// which must implement it. An engine that documents a partial overview passes partial:
// the figures it names in Overview.Partial (finished batches and failures) are then not
// checked, and Partial must say so.
func RunOverview(t *testing.T, newStore NewStore, partial bool) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s asyncfn.Overviewer)
	}{
		{"Counts", func(t *testing.T, s asyncfn.Overviewer) { testOverviewCounts(t, s, partial) }},
		{"Failures", func(t *testing.T, s asyncfn.Overviewer) { testOverviewFailures(t, s, partial) }},
		{"EmptyAndClosed", testOverviewEmptyAndClosed},
	}
	for _, tt := range tests {
		t.Run("Overview"+tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t)
			o, ok := s.(asyncfn.Overviewer)
			if !ok {
				t.Fatalf("%T does not implement asyncfn.Overviewer", s)
			}
			tt.fn(t, o)
		})
	}
}

// finishAt claims the live batch key at at and finishes it then, failed with message if
// it is not empty, else succeeded.
func finishAt(t *testing.T, s asyncfn.Store, key asyncfn.Key, at time.Time, message string) {
	t.Helper()
	mustClaimKey(t, s, key, "w", at)
	p := asyncfn.Succeed(at, []byte(`{"data":[[0,1],[1,2]]}`))
	if message != "" {
		p = asyncfn.Fail(at, &asyncfn.Error{Kind: asyncfn.InvalidInput, Message: message})
	}
	if err := s.Finish(ctx, key, "w", p); err != nil {
		t.Fatalf("Finish(%v): %v", key, err)
	}
}

func overview(t *testing.T, s asyncfn.Overviewer, now time.Time, p asyncfn.OverviewParams) *asyncfn.Overview {
	t.Helper()
	o, err := s.Overview(ctx, now, p)
	if err != nil {
		t.Fatalf("Overview: %v", err)
	}
	return o
}

// Per function: live queued and running batches with the oldest queued one's creation,
// batches finished in the window and the rows of those that succeeded; expired batches
// and batches finished before the window count nowhere.
func testOverviewCounts(t *testing.T, o asyncfn.Overviewer, partial bool) {
	s := o.(asyncfn.Store)
	now := t0.Add(time.Hour)
	create := func(fn, id string, created time.Time) asyncfn.Key {
		b := newBatch(fn, id, created)
		mustCreate(t, s, b)
		return b.Key
	}
	create("alpha", "q-old", t0.Add(10*time.Second))
	create("alpha", "q-new", t0.Add(20*time.Second))
	create("beta", "q", t0.Add(5*time.Second))
	mustClaimKey(t, s, create("alpha", "running", t0), "w", now.Add(-time.Second))
	finishAt(t, s, create("alpha", "ok-1", t0), now.Add(-10*time.Second), "")
	finishAt(t, s, create("alpha", "ok-2", t0), now, "") // the window's end is in it
	finishAt(t, s, create("alpha", "ok-before", t0), now.Add(-time.Minute), "")
	finishAt(t, s, create("beta", "failed", t0), now.Add(-30*time.Second), "bad input")
	// Expired at now: counted nowhere, although no sweep removed them.
	for i, state := range []string{"queued", "running", "succeeded", "failed"} {
		b := newBatch("gone", state, t0)
		b.ExpiresAt = now
		mustCreate(t, s, b)
		switch i {
		case 1:
			mustClaimKey(t, s, b.Key, "w", now.Add(-time.Second))
		case 2:
			finishAt(t, s, b.Key, now.Add(-time.Second), "")
		case 3:
			finishAt(t, s, b.Key, now.Add(-time.Second), "expired failure")
		}
	}
	create("beta", "q-new", t0.Add(time.Minute))

	got := overview(t, o, now, asyncfn.OverviewParams{})
	if got.Window != asyncfn.DefaultOverviewWindow {
		t.Errorf("Window = %v, want the default %v", got.Window, asyncfn.DefaultOverviewWindow)
	}
	want := []asyncfn.FunctionOverview{
		{Function: "alpha", Queued: 2, Running: 1, OldestQueued: t0.Add(10 * time.Second), Succeeded: 2, Rows: 4},
		{Function: "beta", Queued: 2, OldestQueued: t0.Add(5 * time.Second), Failed: 1},
	}
	if partial {
		if got.Partial == "" {
			t.Errorf("Partial is empty for an engine that documents a partial overview")
		}
		for i := range want {
			want[i].Succeeded, want[i].Failed, want[i].Rows = 0, 0, 0
		}
	}
	if !sameOverview(got.Functions, want) {
		t.Fatalf("Functions =\n%+v\nwant\n%+v", got.Functions, want)
	}
	totals := got.Totals()
	if totals.Queued != 4 || totals.Running != 1 || !sameTime(totals.OldestQueued, t0.Add(5*time.Second)) {
		t.Errorf("Totals = %+v, want 4 queued, 1 running, the oldest queued at %v", totals, t0.Add(5*time.Second))
	}

	// A longer window counts the earlier batch too; a window beyond the cap is capped.
	got = overview(t, o, now, asyncfn.OverviewParams{Window: 2 * time.Minute})
	if !partial && (got.Functions[0].Succeeded != 3 || got.Functions[0].Rows != 6) {
		t.Errorf("with a 2-minute window alpha = %+v, want 3 succeeded, 6 rows", got.Functions[0])
	}
	if got = overview(t, o, now, asyncfn.OverviewParams{Window: 24 * time.Hour}); got.Window != asyncfn.MaxOverviewWindow {
		t.Errorf("Window of a 24-hour request = %v, want the cap %v", got.Window, asyncfn.MaxOverviewWindow)
	}
}

func sameOverview(got, want []asyncfn.FunctionOverview) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		g, w := got[i], want[i]
		if !sameTime(g.OldestQueued, w.OldestQueued) {
			return false
		}
		g.OldestQueued, w.OldestQueued = time.Time{}, time.Time{}
		if g != w {
			return false
		}
	}
	return true
}

// The most recent failures, newest first, with their errors, up to the limit asked,
// whenever they finished; retried batches (Queued with a last error) are not failures.
func testOverviewFailures(t *testing.T, o asyncfn.Overviewer, partial bool) {
	s := o.(asyncfn.Store)
	now := t0.Add(time.Hour)
	for i := range 5 {
		b := newBatch("fn", fmt.Sprint("f", i), t0)
		mustCreate(t, s, b)
		finishAt(t, s, b.Key, t0.Add(time.Duration(i)*time.Minute), fmt.Sprint("failure ", i))
	}
	retried := newBatch("fn", "retried", t0)
	mustCreate(t, s, retried)
	mustClaimKey(t, s, retried.Key, "w", t0)
	if err := s.Finish(ctx, retried.Key, "w", asyncfn.Retry(now.Add(-time.Second), &asyncfn.Error{Kind: asyncfn.Internal, Message: "try again"}, now.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	if partial {
		if got := overview(t, o, now, asyncfn.OverviewParams{}); len(got.Failures) != 0 || got.Partial == "" {
			t.Fatalf("partial overview: %d failures, Partial %q; want none, and a Partial that says so", len(got.Failures), got.Partial)
		}
		return
	}
	got := overview(t, o, now, asyncfn.OverviewParams{Failures: 3})
	if len(got.Failures) != 3 {
		t.Fatalf("%d failures, want the 3 asked for: %+v", len(got.Failures), got.Failures)
	}
	for i, f := range got.Failures {
		n := 4 - i
		want := asyncfn.FailureOverview{Key: asyncfn.Key{Function: "fn", BatchID: fmt.Sprint("f", n)}, QueryID: fmt.Sprint("query-f", n),
			Attempts: 1, Error: asyncfn.Error{Kind: asyncfn.InvalidInput, Message: fmt.Sprint("failure ", n)}}
		wantTime(t, fmt.Sprint("failure ", i, " FinishedAt"), f.FinishedAt, t0.Add(time.Duration(n)*time.Minute))
		f.FinishedAt = time.Time{}
		if !reflect.DeepEqual(f, want) {
			t.Errorf("failure %d = %+v, want %+v", i, f, want)
		}
	}
	if got := overview(t, o, now, asyncfn.OverviewParams{}); len(got.Failures) != 5 {
		t.Errorf("%d failures by default, want all 5 (the default is %d)", len(got.Failures), asyncfn.DefaultOverviewFailures)
	}
	if got := overview(t, o, now, asyncfn.OverviewParams{Failures: -1}); len(got.Failures) != 0 {
		t.Errorf("%d failures when none are asked for", len(got.Failures))
	}
}

func testOverviewEmptyAndClosed(t *testing.T, o asyncfn.Overviewer) {
	got := overview(t, o, t0, asyncfn.OverviewParams{})
	if len(got.Functions) != 0 || len(got.Failures) != 0 {
		t.Errorf("an empty store's overview: %+v", got)
	}
	if err := o.(asyncfn.Store).Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Overview(ctx, t0, asyncfn.OverviewParams{}); !errors.Is(err, asyncfn.ErrClosed) {
		t.Errorf("Overview after Close: %v, want ErrClosed", err)
	}
}
