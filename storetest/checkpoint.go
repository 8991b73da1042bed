package storetest

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
)

// The tests of Store.Checkpoint, one per sentence of its contract.

// savedRows are rows numbered numbers, each valued by its number and tag.
func savedRows(tag string, numbers ...int) []asyncfn.SavedRow {
	rows := make([]asyncfn.SavedRow, len(numbers))
	for i, n := range numbers {
		rows[i] = asyncfn.SavedRow{Number: n, Value: []byte(fmt.Sprintf(`"%s%d"`, tag, n))}
	}
	return rows
}

func mustCheckpoint(t *testing.T, s asyncfn.Store, key asyncfn.Key, owner string, now time.Time, rows []asyncfn.SavedRow) {
	t.Helper()
	if err := s.Checkpoint(ctx, key, owner, now, rows); err != nil {
		t.Fatalf("Checkpoint(%v, %s, %d rows): %v", key, owner, len(rows), err)
	}
}

// wantSaved fails unless got are want, in order.
func wantSaved(t *testing.T, what string, got, want []asyncfn.SavedRow) {
	t.Helper()
	same := len(got) == len(want)
	for i := 0; same && i < len(got); i++ {
		same = got[i].Number == want[i].Number && bytes.Equal(got[i].Value, want[i].Value)
	}
	if !same || (want == nil) != (got == nil) {
		t.Fatalf("%s: saved rows %s, want %s", what, showSaved(got), showSaved(want))
	}
}

func showSaved(rows []asyncfn.SavedRow) string {
	if rows == nil {
		return "nil"
	}
	var b bytes.Buffer
	for _, r := range rows {
		v := r.Value
		if len(v) > 20 {
			v = append(v[:20:20], "..."...)
		}
		fmt.Fprintf(&b, "[%d %s (%d bytes)]", r.Number, v, len(r.Value))
	}
	return b.String()
}

// testCheckpointSaved: rows checkpointed come back, in row order, with the claim of the
// next attempt and Get with its payload; not without it, and none before any checkpoint.
func testCheckpointSaved(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "saved", t0)
	mustCreate(t, s, b)
	first := mustClaimKey(t, s, b.Key, "w", t0)
	wantSaved(t, "the first claim", first.Saved, nil)
	mustCheckpoint(t, s, b.Key, "w", t0, savedRows("a", 7, 2))
	mustCheckpoint(t, s, b.Key, "w", t0, savedRows("a", 0))
	want := savedRows("a", 0, 2, 7)
	wantSaved(t, "Get with its payload", mustGet(t, s, b.Key, t0).Saved, want)
	if got, err := s.Get(ctx, b.Key, t0, false); err != nil || got.Saved != nil {
		t.Fatalf("Get without payload = %+v, %v; want no saved rows", got, err)
	}
	// The worker dies: the next attempt, by Claim, gets them.
	later := t0.Add(time.Minute)
	again, err := s.Claim(ctx, claim("w2", later, 10))
	if err != nil || len(again) != 1 {
		t.Fatalf("Claim after the lease = %v, %v; want the batch", keysOf(again), err)
	}
	wantSaved(t, "Claim of the next attempt", again[0].Saved, want)
	mustCheckpoint(t, s, b.Key, "w2", later, savedRows("b", 1))
	if err := s.Finish(ctx, b.Key, "w2", asyncfn.Retry(later, &asyncfn.Error{Kind: asyncfn.Retryable, Message: "x"}, later)); err != nil {
		t.Fatal(err)
	}
	// ClaimKey too.
	third := mustClaimKey(t, s, b.Key, "w3", later)
	wantSaved(t, "ClaimKey", third.Saved, []asyncfn.SavedRow{want[0], savedRows("b", 1)[0], want[1], want[2]})
}

// testCheckpointKeepsFirst: a row saved already, or given twice in one call, keeps its
// first value.
func testCheckpointKeepsFirst(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "first", t0)
	mustCreate(t, s, b)
	mustClaimKey(t, s, b.Key, "w", t0)
	mustCheckpoint(t, s, b.Key, "w", t0, savedRows("a", 1))
	mustCheckpoint(t, s, b.Key, "w", t0, append(savedRows("b", 1, 0), savedRows("c", 0)...))
	wantSaved(t, "Get", mustGet(t, s, b.Key, t0).Saved, append(savedRows("b", 0), savedRows("a", 1)...))
}

// testCheckpointLeaseLost: a checkpoint by a worker that does not hold the lease (of a
// queued batch, another owner's, a finished one, an expired one or none) is ErrLeaseLost
// and changes nothing.
func testCheckpointLeaseLost(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "notmine", t0)
	b.ExpiresAt = t0.Add(time.Hour)
	mustCreate(t, s, b)
	err := s.Checkpoint(ctx, b.Key, "w", t0, savedRows("a", 0))
	wantErr(t, "Checkpoint of a queued batch", err, asyncfn.ErrLeaseLost)
	mustClaimKey(t, s, b.Key, "w1", t0)
	err = s.Checkpoint(ctx, b.Key, "w2", t0, savedRows("a", 0))
	wantErr(t, "Checkpoint by another owner", err, asyncfn.ErrLeaseLost)
	wantSaved(t, "Get after refused checkpoints", mustGet(t, s, b.Key, t0).Saved, nil)
	err = s.Checkpoint(ctx, b.Key, "w1", b.ExpiresAt, savedRows("a", 0))
	wantErr(t, "Checkpoint of an expired batch", err, asyncfn.ErrLeaseLost)
	wantSaved(t, "Get after a checkpoint past the expiry", mustGet(t, s, b.Key, t0).Saved, nil)
	err = s.Checkpoint(ctx, asyncfn.Key{Function: "echo", BatchID: "nope"}, "w1", t0, savedRows("a", 0))
	wantErr(t, "Checkpoint of an unknown batch", err, asyncfn.ErrLeaseLost)
	if err := s.Finish(ctx, b.Key, "w1", asyncfn.Fail(t0, &asyncfn.Error{Kind: asyncfn.Internal, Message: "x"})); err != nil {
		t.Fatal(err)
	}
	err = s.Checkpoint(ctx, b.Key, "w1", t0, savedRows("a", 0))
	wantErr(t, "Checkpoint of a finished batch", err, asyncfn.ErrLeaseLost)
}

// testCheckpointTooLarge: the values given over a batch's life total at most
// MaxSavedBytes, those ignored included; a call that would pass it is
// ErrCheckpointTooLarge and changes nothing.
func testCheckpointTooLarge(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "toolarge", t0)
	mustCreate(t, s, b)
	mustClaimKey(t, s, b.Key, "w", t0)
	small := savedRows("", 0) // 3 bytes
	mustCheckpoint(t, s, b.Key, "w", t0, small)
	big := asyncfn.SavedRow{Number: 1, Value: bigBytes(asyncfn.MaxSavedBytes - 4)}
	err := s.Checkpoint(ctx, b.Key, "w", t0, []asyncfn.SavedRow{big, savedRows("x", 0)[0]})
	wantErr(t, "Checkpoint past the limit with a row saved already", err, asyncfn.ErrCheckpointTooLarge)
	wantSaved(t, "Get after a refused checkpoint", mustGet(t, s, b.Key, t0).Saved, small)
	mustCheckpoint(t, s, b.Key, "w", t0, []asyncfn.SavedRow{big}) // to the limit exactly
	err = s.Checkpoint(ctx, b.Key, "w", t0, savedRows("", 2))
	wantErr(t, "Checkpoint past the limit", err, asyncfn.ErrCheckpointTooLarge)
	wantSaved(t, "Get at the limit", mustGet(t, s, b.Key, t0).Saved, []asyncfn.SavedRow{small[0], big})
}

// testCheckpointKeptForNextAttempt: Finish with OutcomeRetried or OutcomeHandedBack keeps
// the rows saved, for the next attempt.
func testCheckpointKeptForNextAttempt(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "kept", t0)
	mustCreate(t, s, b)
	mustClaimKey(t, s, b.Key, "w", t0)
	mustCheckpoint(t, s, b.Key, "w", t0, savedRows("a", 0))
	if err := s.Finish(ctx, b.Key, "w", asyncfn.Retry(t0, &asyncfn.Error{Kind: asyncfn.Retryable, Message: "x"}, t0)); err != nil {
		t.Fatal(err)
	}
	wantSaved(t, "after a retry", mustClaimKey(t, s, b.Key, "w", t0).Saved, savedRows("a", 0))
	mustCheckpoint(t, s, b.Key, "w", t0, savedRows("a", 1))
	if err := s.Finish(ctx, b.Key, "w", asyncfn.HandBack(t0, t0)); err != nil {
		t.Fatal(err)
	}
	wantSaved(t, "after a hand-back", mustClaimKey(t, s, b.Key, "w", t0).Saved, savedRows("a", 0, 1))
}

// testCheckpointNotInherited: a batch created under the key of an expired one starts
// with no rows saved.
func testCheckpointNotInherited(t *testing.T, s asyncfn.Store) {
	b := newBatch("echo", "reborn", t0)
	b.ExpiresAt = t0.Add(time.Minute)
	mustCreate(t, s, b)
	mustClaimKey(t, s, b.Key, "w", t0)
	mustCheckpoint(t, s, b.Key, "w", t0, savedRows("old", 0, 1))
	later := t0.Add(2 * time.Minute)
	mustCreate(t, s, newBatch("echo", "reborn", later))
	wantSaved(t, "Get of the new batch", mustGet(t, s, b.Key, later).Saved, nil)
	wantSaved(t, "the new batch's claim", mustClaimKey(t, s, b.Key, "w", later).Saved, nil)
	// Nor does it meet the old one's limit.
	mustCheckpoint(t, s, b.Key, "w", later, []asyncfn.SavedRow{{Number: 0, Value: bigBytes(asyncfn.MaxSavedBytes)}})
}
