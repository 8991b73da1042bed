package status_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/memory"
	"github.com/asyncfn/asyncfn/status"
)

func TestRecorder(t *testing.T) {
	reg, err := asyncfn.NewRegistry(asyncfn.Function{Name: "f", Func: asyncfn.Echo})
	if err != nil {
		t.Fatal(err)
	}
	r := status.New(reg, memory.New())
	key := func(i int) asyncfn.Key { return asyncfn.Key{Function: "f", BatchID: fmt.Sprint("b", i)} }
	for i := range status.RecentSize + 5 {
		r.BatchAccepted(asyncfn.AcceptInfo{Key: key(i), Rows: 2})
		r.BatchStarted(asyncfn.RunInfo{Key: key(i), Rows: 2, Attempt: 1})
		info := asyncfn.RunInfo{Key: key(i), Rows: 2, Attempt: 1, Outcome: asyncfn.OutcomeSucceeded, Total: 100 * time.Millisecond}
		if i%5 == 0 {
			info.Outcome, info.Error = asyncfn.OutcomeFailed, &asyncfn.Error{Kind: asyncfn.Internal, Message: fmt.Sprint("boom ", i)}
		}
		r.BatchFinished(info)
	}
	r.BatchAccepted(asyncfn.AcceptInfo{Key: key(0), Duplicate: true})
	r.BatchRejected("f", "conflict")
	r.BatchRejected("nosuch", "unknown_function") // not kept: unknown routes are unbounded

	s := r.Snapshot(context.Background())
	if len(s.Functions) != 1 {
		t.Fatalf("functions: %+v", s.Functions)
	}
	f := s.Functions[0]
	if f.Accepted != 25 || f.Duplicates != 1 || f.Rejected != 1 || f.Succeeded != 20 || f.Failed != 5 || f.Rows != 40 || f.Running != 0 {
		t.Errorf("function stats: %+v", f)
	}
	if f.AvgSeconds < 0.099 || f.AvgSeconds > 0.101 {
		t.Errorf("mean latency %g, want 0.1", f.AvgSeconds)
	}
	if len(s.Recent) != status.RecentSize || s.Recent[0].BatchID != "b24" || s.Recent[status.RecentSize-1].BatchID != "b5" {
		t.Errorf("recent: %d, newest %s, oldest %s", len(s.Recent), s.Recent[0].BatchID, s.Recent[len(s.Recent)-1].BatchID)
	}
	if len(s.Failures) != 5 || s.Failures[0].Message != "boom 20" || s.Failures[4].Message != "boom 0" {
		t.Errorf("failures: %+v", s.Failures)
	}
	if s.Last.Accepted != 25 || s.Last.Succeeded != 20 || s.Last.Failed != 5 || s.Last.Rows != 40 {
		t.Errorf("last minutes: %+v", s.Last)
	}
	if len(s.Series) != status.Buckets {
		t.Errorf("%d points, want %d", len(s.Series), status.Buckets)
	}
	var accepted, rows int64
	for _, p := range s.Series {
		accepted, rows = accepted+p.Accepted, rows+p.Rows
	}
	if accepted != 25 || rows != 40 {
		t.Errorf("the series hold %d batches and %d rows, want 25 and 40", accepted, rows)
	}
}

func TestPageEscapes(t *testing.T) {
	reg, _ := asyncfn.NewRegistry(asyncfn.Function{Name: "f", Func: asyncfn.Echo})
	r := status.New(reg, nil)
	r.BatchFinished(asyncfn.RunInfo{Key: asyncfn.Key{Function: "f", BatchID: `<script>alert(1)</script>`}, Outcome: asyncfn.OutcomeFailed,
		Error: &asyncfn.Error{Kind: asyncfn.InvalidInput, Message: `"><img src=x onerror=alert(1)>`}})
	h := r.Routes(nil)["GET /status"]
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/status", nil))
	body := w.Body.String()
	if w.Code != 200 || strings.Contains(body, "<script>alert") || strings.Contains(body, "<img src=x") {
		t.Errorf("the page does not escape batch ids and messages:\n%s", body)
	}
	csp := w.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'nonce-") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	w = httptest.NewRecorder()
	r.Routes(nil)["GET /status.json"].ServeHTTP(w, httptest.NewRequest("GET", "/status.json", nil))
	var s status.Snapshot
	if err := json.Unmarshal(w.Body.Bytes(), &s); err != nil || len(s.Failures) != 1 {
		t.Errorf("/status.json: %v %s", err, w.Body)
	}
}
