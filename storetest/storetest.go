// Package storetest is the conformance suite of the asyncfn.Store contract. Every engine
// runs it unchanged from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) asyncfn.Store { return newStore(t) })
//	}
//
// Each test turns one sentence of the contract (the doc comments of asyncfn.Store) into
// checks. Tests run in parallel, each on a store of its own from newStore, which must
// register its own cleanup (t.Cleanup) and may share one backend between stores as long
// as they do not see each other's batches.
//
// Engines run the suites of shared.go that apply to them too: RunShared when several
// processes may share the backend, RunNotifier when the engine implements asyncfn.Notifier,
// RunUnreachable when the backend is reached over a network (Proxy cuts it off).
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
)

// NewStore returns a fresh, empty store for one test.
type NewStore func(t *testing.T) asyncfn.Store

// t0 is a fixed clock origin: every test passes explicit times, so no test depends on the
// wall clock, and engines must compare the times they are given.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// Run runs the whole suite.
func Run(t *testing.T, newStore NewStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s asyncfn.Store)
	}{
		{"CreateThenGet", testCreateThenGet},
		{"Headers", testHeaders},
		{"CreateDuplicate", testCreateDuplicate},
		{"CreateConflict", testCreateConflict},
		{"CreateConcurrentOnce", testCreateConcurrentOnce},
		{"CreateAfterExpiry", testCreateAfterExpiry},
		{"CreateClaimed", testCreateClaimed},
		{"CreateClaimedWithoutPayload", testCreateClaimedWithoutPayload},
		{"RecreateClaimedWithoutPayload", testRecreateClaimedWithoutPayload},
		{"CreateFinished", testCreateFinished},
		{"CreateAfterAttempt", testCreateAfterAttempt},
		{"GetNotFound", testGetNotFound},
		{"GetExpired", testGetExpired},
		{"KeysAreSeparate", testKeysAreSeparate},
		{"LargePayload", testLargePayload},
		{"ClaimOldestFirstAndLimit", testClaimOldestFirstAndLimit},
		{"ClaimFunctionsFilter", testClaimFunctionsFilter},
		{"ClaimRespectsRunAfter", testClaimRespectsRunAfter},
		{"ClaimSkipsLiveLeaseAndFinished", testClaimSkipsLiveLeaseAndFinished},
		{"ClaimExpiredLease", testClaimExpiredLease},
		{"ClaimExpiredLeaseNoAttemptsLeft", testClaimExpiredLeaseNoAttemptsLeft},
		{"ClaimSkipsExpiredBatches", testClaimSkipsExpiredBatches},
		{"ClaimConcurrentDisjoint", testClaimConcurrentDisjoint},
		{"ClaimKey", testClaimKey},
		{"ClaimKeyNotClaimable", testClaimKeyNotClaimable},
		{"ClaimKeyNoAttemptsLeft", testClaimKeyNoAttemptsLeft},
		{"ClaimKeyConcurrentOnce", testClaimKeyConcurrentOnce},
		{"Extend", testExtend},
		{"ExtendLeaseLost", testExtendLeaseLost},
		{"FinishSucceeded", testFinishSucceeded},
		{"FinishFailed", testFinishFailed},
		{"FinishRetry", testFinishRetry},
		{"FinishRelease", testFinishRelease},
		{"FinishLeaseLost", testFinishLeaseLost},
		{"FinishAfterReclaim", testFinishAfterReclaim},
		{"LargeResult", testLargeResult},
		{"CheckpointSaved", testCheckpointSaved},
		{"CheckpointKeepsFirst", testCheckpointKeepsFirst},
		{"CheckpointLeaseLost", testCheckpointLeaseLost},
		{"CheckpointTooLarge", testCheckpointTooLarge},
		{"CheckpointKeptForNextAttempt", testCheckpointKeptForNextAttempt},
		{"CheckpointNotInherited", testCheckpointNotInherited},
		{"MarkDelivered", testMarkDelivered},
		{"MarkDeliveredUnfinished", testMarkDeliveredUnfinished},
		{"FinishDelivered", testFinishDelivered},
		{"Sweep", testSweep},
		{"SweepLimit", testSweepLimit},
		{"SweepConcurrent", testSweepConcurrent},
		{"Stats", testStats},
		{"PingAndClose", testPingAndClose},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newStore(t))
		})
	}
}

var ctx = context.Background()

// newBatch returns a queued batch of function fn created at created, living 12 hours.
func newBatch(fn, id string, created time.Time) *asyncfn.Batch {
	payload := []byte(fmt.Sprintf(`{"data":[[0,%q],[1,"two"]]}`, id))
	return &asyncfn.Batch{
		Key:         asyncfn.Key{Function: fn, BatchID: id},
		QueryID:     "query-" + id,
		State:       asyncfn.Queued,
		Payload:     payload,
		Digest:      asyncfn.Digest(payload),
		Rows:        2,
		MaxAttempts: 3,
		CreatedAt:   created,
		ExpiresAt:   created.Add(12 * time.Hour),
	}
}

func mustCreate(t *testing.T, s asyncfn.Store, b *asyncfn.Batch) {
	t.Helper()
	if old, err := s.Create(ctx, b); err != nil {
		t.Fatalf("Create(%v) = %v, %v; want nil, nil", b.Key, old, err)
	}
}

func mustGet(t *testing.T, s asyncfn.Store, key asyncfn.Key, now time.Time) *asyncfn.Batch {
	t.Helper()
	b, err := s.Get(ctx, key, now, true)
	if err != nil {
		t.Fatalf("Get(%v) error: %v", key, err)
	}
	return b
}

func mustClaimKey(t *testing.T, s asyncfn.Store, key asyncfn.Key, owner string, now time.Time) *asyncfn.Batch {
	t.Helper()
	b, err := s.ClaimKey(ctx, key, claim(owner, now, 100))
	if err != nil {
		t.Fatalf("ClaimKey(%v) error: %v", key, err)
	}
	return b
}

func claim(owner string, now time.Time, limit int, fns ...string) asyncfn.ClaimParams {
	return asyncfn.ClaimParams{Owner: owner, Now: now, Lease: 30 * time.Second, Limit: limit, Functions: fns}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: error %v, want %v", what, err, want)
	}
}

func wantState(t *testing.T, b *asyncfn.Batch, state asyncfn.State) {
	t.Helper()
	if b.State != state {
		t.Fatalf("batch %v state %q, want %q", b.Key, b.State, state)
	}
}

func sameTime(a, b time.Time) bool { return a.Equal(b) || a.Sub(b).Abs() < time.Millisecond }

func wantTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !sameTime(got, want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

func keysOf(bs []*asyncfn.Batch) []string {
	var ids []string
	for _, b := range bs {
		ids = append(ids, b.Key.BatchID)
	}
	return ids
}

func testCreateThenGet(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "q1:1:1:0:0", t0)
	mustCreate(t, s, b)
	got := mustGet(t, s, b.Key, t0.Add(time.Second))
	wantState(t, got, asyncfn.Queued)
	if got.Key != b.Key || got.QueryID != b.QueryID || got.Digest != b.Digest || got.Rows != 2 ||
		got.MaxAttempts != 3 || got.Attempts != 0 || !bytes.Equal(got.Payload, b.Payload) {
		t.Fatalf("Get = %+v, want the batch created %+v", got, b)
	}
	wantTime(t, "CreatedAt", got.CreatedAt, b.CreatedAt)
	wantTime(t, "ExpiresAt", got.ExpiresAt, b.ExpiresAt)
	if got.Result != nil || got.Error != nil || got.Owner != "" {
		t.Fatalf("new batch has result %q, error %v, owner %q", got.Result, got.Error, got.Owner)
	}
	noPayload, err := s.Get(ctx, b.Key, t0, false)
	if err != nil || noPayload.Payload != nil || noPayload.Rows != 2 {
		t.Fatalf("Get without payload = %+v, %v; want no payload", noPayload, err)
	}
	if got.Headers != nil {
		t.Fatalf("batch created without headers has headers %v", got.Headers)
	}
}

// testHeaders: the headers of a batch are kept as they were sent, and come back with
// every read and with its claim, for the function.
func testHeaders(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "headers", t0)
	b.Headers = map[string]string{"sf-custom-language": "fr", "sf-context-current_user": "ALICE \"O'Hara\" ü",
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	mustCreate(t, s, b)
	if got := mustGet(t, s, b.Key, t0); !maps.Equal(got.Headers, b.Headers) {
		t.Fatalf("Get: headers %v, want %v", got.Headers, b.Headers)
	}
	claimed, err := s.Claim(ctx, claim("w", t0, 10))
	if err != nil || len(claimed) != 1 || !maps.Equal(claimed[0].Headers, b.Headers) {
		t.Fatalf("Claim = %+v, %v; want the batch with headers %v", claimed, err, b.Headers)
	}
}

func testCreateDuplicate(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "dup", t0)
	mustCreate(t, s, b)
	again := newBatch("echo", "dup", t0.Add(time.Minute))
	old, err := s.Create(ctx, again)
	wantErr(t, "second Create", err, asyncfn.ErrDuplicate)
	if old == nil || old.Key != b.Key || old.State != asyncfn.Queued {
		t.Fatalf("second Create returned %+v, want the stored batch", old)
	}
	wantTime(t, "stored CreatedAt", mustGet(t, s, b.Key, t0).CreatedAt, t0)
	// A duplicate of a finished batch returns its result.
	mustClaimKey(t, s, b.Key, "w", t0)
	if err := s.Finish(ctx, b.Key, "w", asyncfn.Succeed(t0, []byte(`{"data":[[0,1],[1,2]]}`))); err != nil {
		t.Fatal(err)
	}
	old, err = s.Create(ctx, again)
	wantErr(t, "Create after finish", err, asyncfn.ErrDuplicate)
	if old.State != asyncfn.Succeeded || string(old.Result) != `{"data":[[0,1],[1,2]]}` {
		t.Fatalf("Create after finish returned %+v, want the succeeded batch with its result", old)
	}
}

func testCreateConflict(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "conflict", t0)
	mustCreate(t, s, b)
	other := newBatch("echo", "conflict", t0)
	other.Payload = []byte(`{"data":[[0,"other"]]}`)
	other.Digest = asyncfn.Digest(other.Payload)
	old, err := s.Create(ctx, other)
	wantErr(t, "Create with another body", err, asyncfn.ErrConflict)
	if old == nil || old.Digest != b.Digest {
		t.Fatalf("conflicting Create returned %+v, want the stored batch", old)
	}
	if got := mustGet(t, s, b.Key, t0); !bytes.Equal(got.Payload, b.Payload) {
		t.Fatalf("payload changed to %q by a conflicting Create", got.Payload)
	}
}

func testCreateConcurrentOnce(t *testing.T, s asyncfn.Store) {
	const n = 16
	var created, dup int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Create(ctx, newBatch("echo", "race", t0))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case errors.Is(err, asyncfn.ErrDuplicate):
				dup++
			default:
				t.Errorf("concurrent Create: %v", err)
			}
		}()
	}
	wg.Wait()
	if created != 1 || dup != n-1 {
		t.Fatalf("%d concurrent Creates: %d created, %d duplicates; want 1 and %d", n, created, dup, n-1)
	}
}

func testCreateAfterExpiry(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "reuse", t0)
	b.ExpiresAt = t0.Add(time.Minute)
	mustCreate(t, s, b)
	later := t0.Add(2 * time.Minute)
	again := newBatch("echo", "reuse", later)
	again.Payload = []byte(`{"data":[[0,"new"]]}`)
	again.Digest = asyncfn.Digest(again.Payload)
	again.Rows = 1
	mustCreate(t, s, again)
	got := mustGet(t, s, b.Key, later)
	if got.Rows != 1 || got.Digest != again.Digest {
		t.Fatalf("Get after re-create = %+v, want the new batch", got)
	}
}

func testCreateClaimed(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "claimed", t0)
	b.State, b.Owner, b.LeaseUntil, b.StartedAt, b.Attempts = asyncfn.Running, "front", t0.Add(30*time.Second), t0, 1
	mustCreate(t, s, b)
	got := mustGet(t, s, b.Key, t0)
	wantState(t, got, asyncfn.Running)
	if got.Owner != "front" || got.Attempts != 1 || !bytes.Equal(got.Payload, b.Payload) {
		t.Fatalf("batch created claimed = %+v", got)
	}
	wantTime(t, "LeaseUntil", got.LeaseUntil, b.LeaseUntil)
	wantTime(t, "StartedAt", got.StartedAt, t0)
	if others, err := s.Claim(ctx, claim("w", t0.Add(time.Second), 10)); err != nil || len(others) != 0 {
		t.Fatalf("Claim of a batch created claimed = %v, %v; want nothing while its lease lives", keysOf(others), err)
	}
	_, err := s.ClaimKey(ctx, b.Key, claim("w", t0.Add(time.Second), 1))
	wantErr(t, "ClaimKey of a batch created claimed", err, asyncfn.ErrNotClaimable)
	if err := s.Extend(ctx, b.Key, "front", t0.Add(time.Minute)); err != nil {
		t.Fatalf("Extend by its creator: %v", err)
	}
	// Its creator dies: after the lease, another worker takes it as its second attempt.
	again, err := s.Claim(ctx, claim("w", t0.Add(2*time.Minute), 10))
	if err != nil || len(again) != 1 || again[0].Attempts != 2 || again[0].Owner != "w" {
		t.Fatalf("Claim after the creator's lease = %+v, %v; want the batch at attempt 2", again, err)
	}
}

func testCreateClaimedWithoutPayload(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "deferred", t0)
	payload := b.Payload
	b.State, b.Owner, b.LeaseUntil, b.StartedAt, b.Attempts = asyncfn.Running, "front", t0.Add(30*time.Second), t0, 1
	b.Payload = nil
	mustCreate(t, s, b)
	if got := mustGet(t, s, b.Key, t0); got.Payload != nil || got.State != asyncfn.Running || got.Digest != b.Digest {
		t.Fatalf("batch created without its payload = %+v", got)
	}
	// Its creator died before storing the payload: no worker can run it.
	later := t0.Add(time.Minute)
	if got, err := s.Claim(ctx, claim("w", later, 10)); err != nil || len(got) != 0 {
		t.Fatalf("Claim of a batch without its payload = %v, %v; want nothing", keysOf(got), err)
	}
	_, err := s.ClaimKey(ctx, b.Key, claim("w", later, 1))
	wantErr(t, "ClaimKey of a batch without its payload", err, asyncfn.ErrNotClaimable)
	// A retried POST brings it: then it runs again.
	if err := s.SavePayload(ctx, b.Key, later, payload); err != nil {
		t.Fatalf("SavePayload: %v", err)
	}
	got, err := s.Claim(ctx, claim("w", later, 10))
	if err != nil || len(got) != 1 || !bytes.Equal(got[0].Payload, payload) || got[0].Attempts != 2 {
		t.Fatalf("Claim after SavePayload = %+v, %v; want the batch with its payload, attempt 2", got, err)
	}
	// A second SavePayload changes nothing.
	if err := s.SavePayload(ctx, b.Key, later, []byte(`{"data":[]}`)); err != nil {
		t.Fatalf("second SavePayload: %v", err)
	}
	if p := mustGet(t, s, b.Key, later).Payload; !bytes.Equal(p, payload) {
		t.Fatalf("payload after a second SavePayload = %q, want %q", p, payload)
	}
	err = s.SavePayload(ctx, asyncfn.Key{Function: "echo", BatchID: "nope"}, later, payload)
	wantErr(t, "SavePayload of an unknown batch", err, asyncfn.ErrNotFound)
}

// A batch stored as its first attempt left it, finished, is what Finish would have made
// of it: its answer is read back, no worker runs it, and it expires as any other.
func testCreateFinished(t *testing.T, s asyncfn.Store) {
	done := t0.Add(2 * time.Second)
	grace := done.Add(10 * time.Minute)
	result := []byte(`{"data":[[0,"ok"],[1,"two"]]}`)
	running := func(id string) *asyncfn.Batch {
		b := newBatch("echo", id, t0)
		b.State, b.Owner, b.LeaseUntil, b.StartedAt, b.Attempts = asyncfn.Running, "front", t0.Add(30*time.Second), t0, 1
		return b
	}
	served := asyncfn.Succeed(done, result)
	served.GraceUntil = grace
	ok := asyncfn.Finished(running("ok-first"), served)
	ok.Payload = nil
	fail := &asyncfn.Error{Kind: asyncfn.InvalidInput, Message: "row 1: not a number."}
	bad := asyncfn.Finished(running("bad-first"), asyncfn.Fail(done, fail))
	bad.Payload = nil
	mustCreate(t, s, ok)
	mustCreate(t, s, bad)

	got := mustGet(t, s, ok.Key, done)
	wantState(t, got, asyncfn.Succeeded)
	if !bytes.Equal(got.Result, result) || got.Payload != nil || got.Error != nil || got.Attempts != 1 || got.Owner != "" {
		t.Fatalf("batch created succeeded = %+v (result %q)", got, got.Result)
	}
	wantTime(t, "StartedAt", got.StartedAt, t0)
	wantTime(t, "FinishedAt", got.FinishedAt, done)
	wantTime(t, "DeliveredAt", got.DeliveredAt, done)
	wantTime(t, "ExpiresAt", got.ExpiresAt, grace)
	got = mustGet(t, s, bad.Key, done)
	wantState(t, got, asyncfn.Failed)
	if got.Error == nil || *got.Error != *fail || got.Result != nil || !got.DeliveredAt.IsZero() {
		t.Fatalf("batch created failed = %+v, error %v", got, got.Error)
	}
	wantTime(t, "FinishedAt", got.FinishedAt, done)

	// A retried POST finds the answer; nothing runs it again.
	old, err := s.Create(ctx, running("ok-first"))
	wantErr(t, "Create of a key stored finished", err, asyncfn.ErrDuplicate)
	if old == nil || old.State != asyncfn.Succeeded {
		t.Fatalf("Create of a key stored finished returned %+v; want the succeeded batch", old)
	}
	if claimed, err := s.Claim(ctx, claim("w", done.Add(time.Hour), 10)); err != nil || len(claimed) != 0 {
		t.Fatalf("Claim = %v, %v; want nothing: both batches are finished", keysOf(claimed), err)
	}
	_, err = s.ClaimKey(ctx, bad.Key, claim("w", done, 1))
	wantErr(t, "ClaimKey of a batch created failed", err, asyncfn.ErrNotClaimable)
	// Its answer not served yet, the failed batch is delivered as any other.
	if err := s.MarkDelivered(ctx, bad.Key, done.Add(time.Second), grace); err != nil {
		t.Fatalf("MarkDelivered of a batch created failed: %v", err)
	}
	wantTime(t, "DeliveredAt after MarkDelivered", mustGet(t, s, bad.Key, done).DeliveredAt, done.Add(time.Second))
	if n, err := s.Sweep(ctx, grace, 10); err != nil || n != 2 {
		t.Fatalf("Sweep after the grace period = %d, %v; want both batches", n, err)
	}
	_, err = s.Get(ctx, ok.Key, t0, false)
	wantErr(t, "Get after Sweep", err, asyncfn.ErrNotFound)
}

// A batch stored after a first attempt that is to be tried again is queued with that
// attempt counted, its error kept, and runs again after RunAfter.
func testCreateAfterAttempt(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "again-later", t0)
	payload := b.Payload
	b.State, b.Owner, b.LeaseUntil, b.StartedAt, b.Attempts = asyncfn.Running, "front", t0.Add(30*time.Second), t0, 1
	lastErr := &asyncfn.Error{Kind: asyncfn.Retryable, Message: "the upstream is busy."}
	q := asyncfn.Finished(b, asyncfn.Retry(t0.Add(time.Second), lastErr, t0.Add(time.Minute)))
	mustCreate(t, s, q)
	got := mustGet(t, s, b.Key, t0.Add(time.Second))
	wantState(t, got, asyncfn.Queued)
	if got.Attempts != 1 || got.Error == nil || *got.Error != *lastErr || !bytes.Equal(got.Payload, payload) {
		t.Fatalf("batch created after an attempt = %+v, error %v", got, got.Error)
	}
	if claimed, err := s.Claim(ctx, claim("w", t0.Add(30*time.Second), 10)); err != nil || len(claimed) != 0 {
		t.Fatalf("Claim before RunAfter = %v, %v; want nothing", keysOf(claimed), err)
	}
	claimed, err := s.Claim(ctx, claim("w", t0.Add(2*time.Minute), 10))
	if err != nil || len(claimed) != 1 || claimed[0].Attempts != 2 || !bytes.Equal(claimed[0].Payload, payload) {
		t.Fatalf("Claim after RunAfter = %+v, %v; want the batch with its payload, attempt 2", claimed, err)
	}
}

// An expired batch not yet swept, whose key is created again claimed and without its
// payload (a POST run at once), must lend the new batch nothing: not its payload, which
// would let the new batch be claimed and run on the old rows, nor its result.
func testRecreateClaimedWithoutPayload(t *testing.T, s asyncfn.Store) {
	old := newBatch("echo", "again", t0)
	old.Payload = []byte(`{"data":[[0,"AAA"]]}`)
	old.Digest, old.Rows, old.ExpiresAt = asyncfn.Digest(old.Payload), 1, t0.Add(time.Minute)
	mustCreate(t, s, old)
	mustClaimKey(t, s, old.Key, "w", t0)
	if err := s.Finish(ctx, old.Key, "w", asyncfn.Succeed(t0, []byte(`{"data":[[0,"AAA"]]}`))); err != nil {
		t.Fatalf("Finish: %v", err)
	}

	later := t0.Add(2 * time.Minute) // the old batch has expired; no sweep has run
	b := newBatch("echo", "again", later)
	payload := []byte(`{"data":[[0,"BBB0"],[1,"BBB1"],[2,"BBB2"],[3,"BBB3"],[4,"BBB4"]]}`)
	b.Digest, b.Rows = asyncfn.Digest(payload), 5
	b.State, b.Owner, b.LeaseUntil, b.StartedAt, b.Attempts = asyncfn.Running, "front", later.Add(30*time.Second), later, 1
	b.Payload = nil
	mustCreate(t, s, b)
	got := mustGet(t, s, b.Key, later)
	if got.Payload != nil || got.Result != nil || got.Rows != 5 || got.State != asyncfn.Running {
		t.Fatalf("re-created batch = state %s, rows %d, payload %q, result %q; want running, 5 rows, no payload, no result",
			got.State, got.Rows, got.Payload, got.Result)
	}
	// Its creator dies before storing the payload: nothing may run it on the old rows.
	if got, err := s.Claim(ctx, claim("w", later.Add(time.Minute), 10)); err != nil || len(got) != 0 {
		t.Fatalf("Claim of the re-created batch without its payload = %v, %v; want nothing", keysOf(got), err)
	}
	if err := s.SavePayload(ctx, b.Key, later.Add(time.Minute), payload); err != nil {
		t.Fatalf("SavePayload: %v", err)
	}
	if p := mustGet(t, s, b.Key, later.Add(time.Minute)).Payload; !bytes.Equal(p, payload) {
		t.Fatalf("payload of the re-created batch = %q, want %q", p, payload)
	}
	claimed, err := s.Claim(ctx, claim("w", later.Add(time.Minute), 10))
	if err != nil || len(claimed) != 1 || !bytes.Equal(claimed[0].Payload, payload) {
		t.Fatalf("Claim after SavePayload = %+v, %v; want the new batch with its own payload", claimed, err)
	}
}

func testGetNotFound(t *testing.T, s asyncfn.Store) {
	_, err := s.Get(ctx, asyncfn.Key{Function: "echo", BatchID: "nope"}, t0, false)
	wantErr(t, "Get of an unknown key", err, asyncfn.ErrNotFound)
}

func testGetExpired(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "old", t0)
	b.ExpiresAt = t0.Add(time.Minute)
	mustCreate(t, s, b)
	mustGet(t, s, b.Key, t0.Add(time.Minute-time.Second))
	_, err := s.Get(ctx, b.Key, t0.Add(time.Minute), false)
	wantErr(t, "Get at ExpiresAt", err, asyncfn.ErrNotFound)
}

func testKeysAreSeparate(t *testing.T, s asyncfn.Store) {
	a := newBatch("echo", "same-id", t0)
	b := newBatch("sentiment", "same-id", t0)
	b.Payload = []byte(`{"data":[[0,"x"]]}`)
	b.Digest = asyncfn.Digest(b.Payload)
	mustCreate(t, s, a)
	mustCreate(t, s, b) // another function: not a conflict
	if got := mustGet(t, s, b.Key, t0); !bytes.Equal(got.Payload, b.Payload) {
		t.Fatalf("function %q sees payload %q", b.Key.Function, got.Payload)
	}
	// Ids with separators and odd characters are opaque.
	odd := newBatch("echo", "01b2c3:1:1:0:0/ü 'x'\"", t0)
	mustCreate(t, s, odd)
	mustGet(t, s, odd.Key, t0)
}

// bigBytes returns n bytes of JSON-safe text that does not compress to nothing.
func bigBytes(n int) []byte {
	var buf bytes.Buffer
	for i := 0; buf.Len() < n; i++ {
		fmt.Fprintf(&buf, "%d lorem ipsum %x; ", i, i*7919)
	}
	return buf.Bytes()[:n]
}

func testLargePayload(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "large", t0)
	b.Payload = append(append([]byte(`{"data":[[0,"`), bigBytes(asyncfn.MaxResultBytes)...), `"]]}`...)
	b.Digest = asyncfn.Digest(b.Payload)
	b.Rows = 1
	mustCreate(t, s, b)
	got := mustGet(t, s, b.Key, t0)
	if !bytes.Equal(got.Payload, b.Payload) {
		t.Fatalf("payload of %d bytes read back as %d bytes, not equal", len(b.Payload), len(got.Payload))
	}
	claimed := mustClaimKey(t, s, b.Key, "w", t0)
	if !bytes.Equal(claimed.Payload, b.Payload) {
		t.Fatalf("claimed payload differs from the one created")
	}
}

func testClaimOldestFirstAndLimit(t *testing.T, s asyncfn.Store) {
	for i, id := range []string{"c", "a", "b"} {
		mustCreate(t, s, newBatch("echo", id, t0.Add(time.Duration(i)*time.Second)))
	}
	now := t0.Add(time.Minute)
	got, err := s.Claim(ctx, claim("w1", now, 2))
	if err != nil {
		t.Fatal(err)
	}
	if ids := strings.Join(keysOf(got), ","); ids != "c,a" {
		t.Fatalf("Claim(limit 2) = %s, want c,a (oldest first)", ids)
	}
	for _, b := range got {
		wantState(t, b, asyncfn.Running)
		if b.Owner != "w1" || b.Attempts != 1 || len(b.Payload) == 0 {
			t.Fatalf("claimed %+v: want owner w1, attempts 1, payload", b)
		}
		wantTime(t, "LeaseUntil", b.LeaseUntil, now.Add(30*time.Second))
		wantTime(t, "StartedAt", b.StartedAt, now)
		stored := mustGet(t, s, b.Key, now)
		wantState(t, stored, asyncfn.Running)
		if stored.Owner != "w1" || stored.Attempts != 1 {
			t.Fatalf("stored after claim %+v", stored)
		}
	}
	rest, err := s.Claim(ctx, claim("w2", now, 10))
	if err != nil || strings.Join(keysOf(rest), ",") != "b" {
		t.Fatalf("second Claim = %v, %v; want b", keysOf(rest), err)
	}
	none, err := s.Claim(ctx, claim("w3", now, 10))
	if err != nil || len(none) != 0 {
		t.Fatalf("Claim with nothing queued = %v, %v; want empty", keysOf(none), err)
	}
}

func testClaimFunctionsFilter(t *testing.T, s asyncfn.Store) {
	mustCreate(t, s, newBatch("echo", "e", t0))
	mustCreate(t, s, newBatch("sentiment", "s", t0.Add(time.Second)))
	mustCreate(t, s, newBatch("vader", "v", t0.Add(2*time.Second)))
	got, err := s.Claim(ctx, claim("w", t0.Add(time.Minute), 10, "sentiment", "vader"))
	if err != nil || strings.Join(keysOf(got), ",") != "s,v" {
		t.Fatalf("Claim(sentiment, vader) = %v, %v; want s,v", keysOf(got), err)
	}
}

func testClaimRespectsRunAfter(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "later", t0)
	mustCreate(t, s, b)
	mustClaimKey(t, s, b.Key, "w", t0)
	retryAt := t0.Add(10 * time.Second)
	if err := s.Finish(ctx, b.Key, "w", asyncfn.Retry(t0, &asyncfn.Error{Kind: asyncfn.Retryable, Message: "busy"}, retryAt)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Claim(ctx, claim("w", retryAt.Add(-time.Second), 10)); len(got) != 0 {
		t.Fatalf("claimed %v before RunAfter", keysOf(got))
	}
	got, err := s.Claim(ctx, claim("w", retryAt, 10))
	if err != nil || len(got) != 1 || got[0].Attempts != 2 {
		t.Fatalf("Claim at RunAfter = %+v, %v; want the batch at attempt 2", got, err)
	}
}

func testClaimSkipsLiveLeaseAndFinished(t *testing.T, s asyncfn.Store) {
	running := newBatch("echo", "running", t0)
	done := newBatch("echo", "done", t0)
	failed := newBatch("echo", "failed", t0)
	for _, b := range []*asyncfn.Batch{running, done, failed} {
		mustCreate(t, s, b)
		mustClaimKey(t, s, b.Key, "w1", t0)
	}
	if err := s.Finish(ctx, done.Key, "w1", asyncfn.Succeed(t0, []byte(`{"data":[]}`))); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, failed.Key, "w1", asyncfn.Fail(t0, &asyncfn.Error{Kind: asyncfn.Internal, Message: "x"})); err != nil {
		t.Fatal(err)
	}
	// At the lease's deadline the lease is still live; finished batches are never claimed.
	got, err := s.Claim(ctx, claim("w2", t0.Add(30*time.Second), 10))
	if err != nil || len(got) != 0 {
		t.Fatalf("Claim = %v, %v; want nothing", keysOf(got), err)
	}
}

func testClaimExpiredLease(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "orphan", t0)
	mustCreate(t, s, b)
	mustClaimKey(t, s, b.Key, "dead", t0)
	later := t0.Add(31 * time.Second)
	got, err := s.Claim(ctx, claim("alive", later, 10))
	if err != nil || len(got) != 1 {
		t.Fatalf("Claim after lease expiry = %v, %v; want the orphaned batch", keysOf(got), err)
	}
	if got[0].Owner != "alive" || got[0].Attempts != 2 || len(got[0].Payload) == 0 {
		t.Fatalf("reclaimed %+v; want owner alive, attempts 2, payload", got[0])
	}
}

func testClaimExpiredLeaseNoAttemptsLeft(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "cursed", t0)
	b.MaxAttempts = 2
	mustCreate(t, s, b)
	now := t0
	for i := 0; i < 2; i++ {
		got, err := s.Claim(ctx, claim(fmt.Sprint("dies-", i), now, 10))
		if err != nil || len(got) != 1 {
			t.Fatalf("claim %d = %v, %v", i+1, keysOf(got), err)
		}
		now = now.Add(time.Minute)
	}
	got, err := s.Claim(ctx, claim("w", now, 10))
	if err != nil || len(got) != 0 {
		t.Fatalf("Claim with no attempts left = %v, %v; want nothing", keysOf(got), err)
	}
	stored := mustGet(t, s, b.Key, now)
	wantState(t, stored, asyncfn.Failed)
	if stored.Error == nil || stored.Error.Kind != asyncfn.Internal || !strings.Contains(stored.Error.Message, "every attempt allowed (2)") {
		t.Fatalf("error of an abandoned batch = %+v; want Internal, naming its 2 attempts", stored.Error)
	}
}

func testClaimSkipsExpiredBatches(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "stale", t0)
	b.ExpiresAt = t0.Add(time.Minute)
	mustCreate(t, s, b)
	got, err := s.Claim(ctx, claim("w", t0.Add(time.Minute), 10))
	if err != nil || len(got) != 0 {
		t.Fatalf("Claim = %v, %v; want no expired batch", keysOf(got), err)
	}
}

func testClaimConcurrentDisjoint(t *testing.T, s asyncfn.Store) {
	const batches, workers = 40, 8
	for i := range batches {
		mustCreate(t, s, newBatch("echo", fmt.Sprint("b", i), t0.Add(time.Duration(i)*time.Millisecond)))
	}
	var mu sync.Mutex
	seen := map[string]string{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			drainClaims(t, s, fmt.Sprint("w", w), 3, &mu, seen)
		}()
	}
	wg.Wait()
	if len(seen) != batches {
		t.Fatalf("%d batches claimed, want %d", len(seen), batches)
	}
}

// drainClaims claims through s as owner, limit at a time, until nothing is left,
// recording in seen (under mu) who claimed each batch and failing on a batch claimed
// twice.
func drainClaims(t *testing.T, s asyncfn.Store, owner string, limit int, mu *sync.Mutex, seen map[string]string) {
	for {
		got, err := s.Claim(ctx, claim(owner, t0.Add(time.Second), limit))
		if err != nil {
			t.Errorf("Claim: %v", err)
			return
		}
		if len(got) == 0 {
			return
		}
		mu.Lock()
		for _, b := range got {
			if prev, dup := seen[b.Key.BatchID]; dup {
				t.Errorf("batch %s claimed by %s and %s", b.Key.BatchID, prev, owner)
			}
			seen[b.Key.BatchID] = owner
		}
		mu.Unlock()
	}
}

func testClaimKey(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "one", t0)
	mustCreate(t, s, b)
	mustCreate(t, s, newBatch("echo", "other", t0))
	got := mustClaimKey(t, s, b.Key, "w", t0.Add(time.Second))
	if got.Key != b.Key || got.State != asyncfn.Running || got.Attempts != 1 || got.Owner != "w" || !bytes.Equal(got.Payload, b.Payload) {
		t.Fatalf("ClaimKey = %+v", got)
	}
	wantTime(t, "LeaseUntil", got.LeaseUntil, t0.Add(31*time.Second))
	_, err := s.ClaimKey(ctx, asyncfn.Key{Function: "echo", BatchID: "nope"}, claim("w", t0, 1))
	wantErr(t, "ClaimKey of an unknown key", err, asyncfn.ErrNotFound)
	if st := mustGet(t, s, asyncfn.Key{Function: "echo", BatchID: "other"}, t0); st.State != asyncfn.Queued {
		t.Fatalf("ClaimKey touched another batch: %+v", st)
	}
}

func testClaimKeyNotClaimable(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "busy", t0)
	mustCreate(t, s, b)
	mustClaimKey(t, s, b.Key, "w1", t0)
	_, err := s.ClaimKey(ctx, b.Key, claim("w2", t0.Add(time.Second), 1))
	wantErr(t, "ClaimKey of a running batch", err, asyncfn.ErrNotClaimable)

	if err := s.Finish(ctx, b.Key, "w1", asyncfn.Retry(t0, &asyncfn.Error{Kind: asyncfn.Retryable, Message: "later"}, t0.Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	_, err = s.ClaimKey(ctx, b.Key, claim("w2", t0.Add(time.Second), 1))
	wantErr(t, "ClaimKey before RunAfter", err, asyncfn.ErrNotClaimable)

	mustClaimKey(t, s, b.Key, "w2", t0.Add(time.Minute))
	if err := s.Finish(ctx, b.Key, "w2", asyncfn.Succeed(t0, []byte(`{"data":[]}`))); err != nil {
		t.Fatal(err)
	}
	_, err = s.ClaimKey(ctx, b.Key, claim("w3", t0.Add(time.Hour), 1))
	wantErr(t, "ClaimKey of a finished batch (a re-delivered event)", err, asyncfn.ErrNotClaimable)

	expired := newBatch("echo", "expired", t0)
	expired.ExpiresAt = t0.Add(time.Minute)
	mustCreate(t, s, expired)
	_, err = s.ClaimKey(ctx, expired.Key, claim("w", t0.Add(time.Hour), 1))
	wantErr(t, "ClaimKey of an expired batch", err, asyncfn.ErrNotFound)
}

func testClaimKeyNoAttemptsLeft(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "last", t0)
	b.MaxAttempts = 1
	mustCreate(t, s, b)
	mustClaimKey(t, s, b.Key, "dies", t0)
	_, err := s.ClaimKey(ctx, b.Key, claim("w", t0.Add(time.Hour), 1))
	wantErr(t, "ClaimKey of an abandoned batch with no attempts left", err, asyncfn.ErrNotClaimable)
	stored := mustGet(t, s, b.Key, t0.Add(time.Hour))
	wantState(t, stored, asyncfn.Failed)
	if stored.Error == nil || stored.Error.Kind != asyncfn.Internal {
		t.Fatalf("abandoned batch error %+v, want Internal", stored.Error)
	}
}

func testClaimKeyConcurrentOnce(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "event", t0)
	mustCreate(t, s, b)
	const n = 8
	var wins int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.ClaimKey(ctx, b.Key, claim(fmt.Sprint("w", i), t0, 1))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, asyncfn.ErrNotClaimable):
				t.Errorf("ClaimKey: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d concurrent ClaimKeys won %d times, want 1", n, wins)
	}
}

func testExtend(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "long", t0)
	mustCreate(t, s, b)
	mustClaimKey(t, s, b.Key, "w", t0)
	until := t0.Add(5 * time.Minute)
	if err := s.Extend(ctx, b.Key, "w", until); err != nil {
		t.Fatalf("Extend by the owner: %v", err)
	}
	wantTime(t, "LeaseUntil after Extend", mustGet(t, s, b.Key, t0).LeaseUntil, until)
	if got, _ := s.Claim(ctx, claim("w2", t0.Add(time.Minute), 10)); len(got) != 0 {
		t.Fatalf("a batch with an extended lease was claimed by another worker")
	}
}

func testExtendLeaseLost(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "lost", t0)
	mustCreate(t, s, b)
	err := s.Extend(ctx, b.Key, "w", t0.Add(time.Minute))
	wantErr(t, "Extend of a queued batch", err, asyncfn.ErrLeaseLost)
	mustClaimKey(t, s, b.Key, "w1", t0)
	err = s.Extend(ctx, b.Key, "w2", t0.Add(time.Minute))
	wantErr(t, "Extend by another owner", err, asyncfn.ErrLeaseLost)
	err = s.Extend(ctx, asyncfn.Key{Function: "echo", BatchID: "nope"}, "w1", t0)
	wantErr(t, "Extend of an unknown batch", err, asyncfn.ErrLeaseLost)
	if err := s.Finish(ctx, b.Key, "w1", asyncfn.Succeed(t0, []byte(`{"data":[]}`))); err != nil {
		t.Fatal(err)
	}
	err = s.Extend(ctx, b.Key, "w1", t0.Add(time.Minute))
	wantErr(t, "Extend of a finished batch", err, asyncfn.ErrLeaseLost)
}

func testFinishSucceeded(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "ok", t0)
	mustCreate(t, s, b)
	mustClaimKey(t, s, b.Key, "w", t0)
	result := []byte(`{"data":[[0,"a"],[1,"b"]]}`)
	done := t0.Add(3 * time.Second)
	if err := s.Finish(ctx, b.Key, "w", asyncfn.Succeed(done, result)); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, b.Key, done, false)
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, got, asyncfn.Succeeded)
	if string(got.Result) != string(result) || got.Error != nil || got.Owner != "" || got.Attempts != 1 {
		t.Fatalf("after success %+v", got)
	}
	wantTime(t, "FinishedAt", got.FinishedAt, done)
	wantTime(t, "StartedAt", got.StartedAt, t0)
}

func testFinishFailed(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "bad", t0)
	mustCreate(t, s, b)
	mustClaimKey(t, s, b.Key, "w", t0)
	fail := &asyncfn.Error{Kind: asyncfn.InvalidInput, Message: "row 1: the argument must be a string."}
	if err := s.Finish(ctx, b.Key, "w", asyncfn.Fail(t0, fail)); err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, s, b.Key, t0)
	wantState(t, got, asyncfn.Failed)
	if got.Error == nil || *got.Error != *fail || got.Result != nil {
		t.Fatalf("after failure error %+v result %q; want %+v", got.Error, got.Result, fail)
	}
}

func testFinishRetry(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "retry", t0)
	mustCreate(t, s, b)
	mustClaimKey(t, s, b.Key, "w", t0)
	e := &asyncfn.Error{Kind: asyncfn.Retryable, Message: "throttled"}
	if err := s.Finish(ctx, b.Key, "w", asyncfn.Retry(t0, e, t0.Add(time.Second))); err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, s, b.Key, t0)
	wantState(t, got, asyncfn.Queued)
	if got.Attempts != 1 || got.Owner != "" || got.Error == nil || got.Error.Message != "throttled" {
		t.Fatalf("after retry %+v", got)
	}
	wantTime(t, "RunAfter", got.RunAfter, t0.Add(time.Second))
	err := s.Extend(ctx, b.Key, "w", t0.Add(time.Minute))
	wantErr(t, "Extend after handing the batch back", err, asyncfn.ErrLeaseLost)
}

func testFinishRelease(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "release", t0)
	mustCreate(t, s, b)
	mustClaimKey(t, s, b.Key, "w", t0)
	if err := s.Finish(ctx, b.Key, "w", asyncfn.HandBack(t0, t0)); err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, s, b.Key, t0)
	wantState(t, got, asyncfn.Queued)
	if got.Attempts != 0 || got.Error != nil {
		t.Fatalf("released batch %+v: want attempts 0 and no error", got)
	}
}

func testFinishLeaseLost(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "notmine", t0)
	mustCreate(t, s, b)
	err := s.Finish(ctx, b.Key, "w", asyncfn.Succeed(t0, []byte(`{}`)))
	wantErr(t, "Finish of a queued batch", err, asyncfn.ErrLeaseLost)
	mustClaimKey(t, s, b.Key, "w1", t0)
	err = s.Finish(ctx, b.Key, "w2", asyncfn.Succeed(t0, []byte(`{}`)))
	wantErr(t, "Finish by another owner", err, asyncfn.ErrLeaseLost)
	got := mustGet(t, s, b.Key, t0)
	if got.State != asyncfn.Running || got.Owner != "w1" || got.Result != nil {
		t.Fatalf("a refused Finish changed the batch: %+v", got)
	}
	err = s.Finish(ctx, asyncfn.Key{Function: "echo", BatchID: "nope"}, "w1", asyncfn.Succeed(t0, []byte(`{}`)))
	wantErr(t, "Finish of an unknown batch", err, asyncfn.ErrLeaseLost)
}

func testFinishAfterReclaim(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "slow", t0)
	mustCreate(t, s, b)
	mustClaimKey(t, s, b.Key, "slow", t0)
	later := t0.Add(time.Minute)
	mustClaimKey(t, s, b.Key, "fast", later)
	err := s.Finish(ctx, b.Key, "slow", asyncfn.Succeed(later, []byte(`{"data":"stale"}`)))
	wantErr(t, "Finish by a worker whose lease expired and was taken", err, asyncfn.ErrLeaseLost)
	if err := s.Finish(ctx, b.Key, "fast", asyncfn.Succeed(later, []byte(`{"data":"fresh"}`))); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, s, b.Key, later); string(got.Result) != `{"data":"fresh"}` || got.Attempts != 2 {
		t.Fatalf("result %q attempts %d; want the new owner's result after 2 attempts", got.Result, got.Attempts)
	}
}

func testLargeResult(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "bigresult", t0)
	mustCreate(t, s, b)
	mustClaimKey(t, s, b.Key, "w", t0)
	result := bigBytes(asyncfn.MaxResultBytes)
	if err := s.Finish(ctx, b.Key, "w", asyncfn.Succeed(t0, result)); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, b.Key, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Result, result) {
		t.Fatalf("result of %d bytes read back as %d bytes, not equal", len(result), len(got.Result))
	}
}

func testMarkDelivered(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "served", t0)
	mustCreate(t, s, b)
	mustClaimKey(t, s, b.Key, "w", t0)
	if err := s.Finish(ctx, b.Key, "w", asyncfn.Succeed(t0, []byte(`{"data":[]}`))); err != nil {
		t.Fatal(err)
	}
	served := t0.Add(time.Second)
	grace := served.Add(10 * time.Minute)
	if err := s.MarkDelivered(ctx, b.Key, served, grace); err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, s, b.Key, served)
	wantTime(t, "DeliveredAt", got.DeliveredAt, served)
	wantTime(t, "ExpiresAt", got.ExpiresAt, grace)
	// Only the first delivery counts: a later one neither moves DeliveredAt nor extends.
	if err := s.MarkDelivered(ctx, b.Key, served.Add(time.Minute), grace.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	got = mustGet(t, s, b.Key, served)
	wantTime(t, "DeliveredAt after a second delivery", got.DeliveredAt, served)
	wantTime(t, "ExpiresAt after a second delivery", got.ExpiresAt, grace)
	// The answer stays within the grace period, and is gone after it.
	mustGet(t, s, b.Key, grace.Add(-time.Second))
	_, err := s.Get(ctx, b.Key, grace, false)
	wantErr(t, "Get after the grace period", err, asyncfn.ErrNotFound)
	err = s.MarkDelivered(ctx, asyncfn.Key{Function: "echo", BatchID: "nope"}, t0, t0)
	wantErr(t, "MarkDelivered of an unknown batch", err, asyncfn.ErrNotFound)
}

func testMarkDeliveredUnfinished(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "pending", t0)
	mustCreate(t, s, b)
	if err := s.MarkDelivered(ctx, b.Key, t0, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, s, b.Key, t0)
	if !got.DeliveredAt.IsZero() {
		t.Fatalf("MarkDelivered of a queued batch set DeliveredAt %v", got.DeliveredAt)
	}
	wantTime(t, "ExpiresAt of an unfinished batch", got.ExpiresAt, b.ExpiresAt)
	// A grace period later than the retention period does not extend it.
	mustClaimKey(t, s, b.Key, "w", t0)
	if err := s.Finish(ctx, b.Key, "w", asyncfn.Succeed(t0, []byte(`{"data":[]}`))); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkDelivered(ctx, b.Key, t0, b.ExpiresAt.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	wantTime(t, "ExpiresAt", mustGet(t, s, b.Key, t0).ExpiresAt, b.ExpiresAt)
}

// A final outcome with GraceUntil is delivered with it, as MarkDelivered right after
// would record it; a non-final one ignores it, and a grace past the retention keeps it.
func testFinishDelivered(t *testing.T, s asyncfn.Store) {
	done := t0.Add(2 * time.Second)
	grace := done.Add(10 * time.Minute)
	ok, bad, late, retried := newBatch("echo", "ok-served", t0), newBatch("echo", "bad-served", t0),
		newBatch("echo", "late-grace", t0), newBatch("echo", "retried-served", t0)
	fail := &asyncfn.Error{Kind: asyncfn.InvalidInput, Message: "row 0: no."}
	outcomes := []struct {
		b *asyncfn.Batch
		p asyncfn.FinishParams
	}{
		{ok, asyncfn.Succeed(done, []byte(`{"data":[[0,1]]}`))},
		{bad, asyncfn.Fail(done, fail)},
		{late, asyncfn.Succeed(done, []byte(`{"data":[[0,1]]}`))},
		{retried, asyncfn.Retry(done, &asyncfn.Error{Kind: asyncfn.Retryable, Message: "later."}, done.Add(time.Second))},
	}
	for _, o := range outcomes {
		mustCreate(t, s, o.b)
		mustClaimKey(t, s, o.b.Key, "w", t0)
		o.p.GraceUntil = grace
		if o.b == late {
			o.p.GraceUntil = o.b.ExpiresAt.Add(time.Hour)
		}
		if err := s.Finish(ctx, o.b.Key, "w", o.p); err != nil {
			t.Fatalf("Finish of %s: %v", o.b.Key.BatchID, err)
		}
	}
	for _, b := range []*asyncfn.Batch{ok, bad} {
		got := mustGet(t, s, b.Key, done)
		wantTime(t, b.Key.BatchID+" DeliveredAt", got.DeliveredAt, done)
		wantTime(t, b.Key.BatchID+" ExpiresAt", got.ExpiresAt, grace)
		// Delivered already: a later MarkDelivered changes nothing.
		if err := s.MarkDelivered(ctx, b.Key, done.Add(time.Minute), grace.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		got = mustGet(t, s, b.Key, done)
		wantTime(t, b.Key.BatchID+" DeliveredAt after MarkDelivered", got.DeliveredAt, done)
		wantTime(t, b.Key.BatchID+" ExpiresAt after MarkDelivered", got.ExpiresAt, grace)
	}
	wantState(t, mustGet(t, s, ok.Key, done), asyncfn.Succeeded)
	wantState(t, mustGet(t, s, bad.Key, done), asyncfn.Failed)
	got := mustGet(t, s, late.Key, done)
	wantTime(t, "DeliveredAt with a grace past the retention", got.DeliveredAt, done)
	wantTime(t, "ExpiresAt with a grace past the retention", got.ExpiresAt, late.ExpiresAt)
	got = mustGet(t, s, retried.Key, done)
	wantState(t, got, asyncfn.Queued)
	if !got.DeliveredAt.IsZero() {
		t.Fatalf("a retried batch finished with GraceUntil was delivered at %v", got.DeliveredAt)
	}
	wantTime(t, "ExpiresAt of a retried batch", got.ExpiresAt, retried.ExpiresAt)
}

func testSweep(t *testing.T, s asyncfn.Store) {
	keep := newBatch("echo", "keep", t0)
	old := newBatch("echo", "old", t0)
	old.ExpiresAt = t0.Add(time.Minute)
	running := newBatch("echo", "running-old", t0)
	running.ExpiresAt = t0.Add(time.Minute)
	for _, b := range []*asyncfn.Batch{keep, old, running} {
		mustCreate(t, s, b)
	}
	mustClaimKey(t, s, running.Key, "w", t0)
	n, err := s.Sweep(ctx, t0.Add(time.Minute), 100)
	if err != nil || n != 2 {
		t.Fatalf("Sweep = %d, %v; want 2 deleted", n, err)
	}
	mustGet(t, s, keep.Key, t0.Add(time.Minute))
	// Once swept, an expired key is gone even for a reader whose clock is behind.
	_, err = s.Get(ctx, old.Key, t0, false)
	wantErr(t, "Get of a swept batch", err, asyncfn.ErrNotFound)
	if n, err := s.Sweep(ctx, t0.Add(time.Minute), 100); err != nil || n != 0 {
		t.Fatalf("second Sweep = %d, %v; want 0", n, err)
	}
}

func testSweepLimit(t *testing.T, s asyncfn.Store) {
	for i := range 5 {
		b := newBatch("echo", fmt.Sprint("x", i), t0)
		b.ExpiresAt = t0.Add(time.Second)
		mustCreate(t, s, b)
	}
	now := t0.Add(time.Hour)
	if n, err := s.Sweep(ctx, now, 3); err != nil || n != 3 {
		t.Fatalf("Sweep(limit 3) = %d, %v; want 3", n, err)
	}
	if n, err := s.Sweep(ctx, now, 3); err != nil || n != 2 {
		t.Fatalf("Sweep(limit 3) again = %d, %v; want 2", n, err)
	}
}

func testSweepConcurrent(t *testing.T, s asyncfn.Store) {
	const batches = 30
	for i := range batches {
		b := newBatch("echo", fmt.Sprint("s", i), t0)
		b.ExpiresAt = t0.Add(time.Second)
		mustCreate(t, s, b)
	}
	var total int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n, err := s.Sweep(ctx, t0.Add(time.Hour), 4)
				if err != nil {
					t.Errorf("concurrent Sweep: %v", err)
					return
				}
				mu.Lock()
				total += n
				mu.Unlock()
				if n == 0 {
					return
				}
			}
		}()
	}
	wg.Wait()
	if total != batches {
		t.Fatalf("concurrent sweeps deleted %d in all, want %d", total, batches)
	}
}

func testStats(t *testing.T, s asyncfn.Store) {
	for i := range 4 {
		mustCreate(t, s, newBatch("echo", fmt.Sprint("q", i), t0))
	}
	expired := newBatch("echo", "expired", t0)
	expired.ExpiresAt = t0.Add(time.Second)
	mustCreate(t, s, expired)
	mustClaimKey(t, s, asyncfn.Key{Function: "echo", BatchID: "q0"}, "w", t0)
	mustClaimKey(t, s, asyncfn.Key{Function: "echo", BatchID: "q1"}, "w", t0)
	mustClaimKey(t, s, asyncfn.Key{Function: "echo", BatchID: "q2"}, "w", t0)
	if err := s.Finish(ctx, asyncfn.Key{Function: "echo", BatchID: "q1"}, "w", asyncfn.Succeed(t0, []byte(`{}`))); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, asyncfn.Key{Function: "echo", BatchID: "q2"}, "w", asyncfn.Fail(t0, &asyncfn.Error{Kind: asyncfn.Internal, Message: "x"})); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats(ctx, t0.Add(time.Minute))
	want := asyncfn.Stats{Queued: 1, Running: 1, Succeeded: 1, Failed: 1}
	if err != nil || st != want {
		t.Fatalf("Stats = %+v, %v; want %+v (expired batches not counted)", st, err, want)
	}
	if n, err := s.CountQueued(ctx, t0.Add(time.Minute)); err != nil || n != 1 {
		t.Fatalf("CountQueued = %d, %v; want 1 (the expired queued batch not counted)", n, err)
	}
}

func testPingAndClose(t *testing.T, s asyncfn.Store) {
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err := s.Get(ctx, asyncfn.Key{Function: "echo", BatchID: "x"}, t0, false)
	wantErr(t, "Get after Close", err, asyncfn.ErrClosed)
	_, err = s.Create(ctx, newBatch("echo", "x", t0))
	wantErr(t, "Create after Close", err, asyncfn.ErrClosed)
	wantErr(t, "Ping after Close", s.Ping(ctx), asyncfn.ErrClosed)
}
