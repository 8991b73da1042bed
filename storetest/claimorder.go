package storetest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
)

// RunClaimOrder runs the tests of Claim's "oldest first" over many batches, for engines
// that spread the queue over partitions (DynamoDB's shards) and must merge them: batches
// created in an order unrelated to their keys are claimed a few at a time, oldest first
// across all of them, and batches created at the same instant are each claimed once.
func RunClaimOrder(t *testing.T, newStore NewStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s asyncfn.Store)
	}{
		{"OldestFirstAcrossMany", testClaimOldestFirstAcrossMany},
		{"SameInstantEachOnce", testClaimSameInstantEachOnce},
	}
	for _, tt := range tests {
		t.Run("ClaimOrder"+tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newStore(t))
		})
	}
}

// claimInPieces claims every claimable batch at now, limit at a time, and returns their
// IDs in the order claimed, failing on a batch claimed twice or a Claim over its limit.
func claimInPieces(t *testing.T, s asyncfn.Store, now time.Time, limit int) []string {
	t.Helper()
	var ids []string
	for {
		got, err := s.Claim(ctx, claim("w", now, limit))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > limit {
			t.Fatalf("Claim(limit %d) returned %d batches", limit, len(got))
		}
		if len(got) == 0 {
			return ids
		}
		for _, id := range keysOf(got) {
			if slices.Contains(ids, id) {
				t.Fatalf("batch %s claimed twice", id)
			}
			ids = append(ids, id)
		}
	}
}

func testClaimOldestFirstAcrossMany(t *testing.T, s asyncfn.Store) {
	const batches = 40
	ids := make([]string, batches)
	for i := range ids {
		ids[i] = fmt.Sprint("b", i)
	}
	// Created in a shuffled order, each a second after the one before: the order to
	// claim them in is the order of creation, unrelated to the keys.
	rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	for i, id := range ids {
		mustCreate(t, s, newBatch("echo", id, t0.Add(time.Duration(i)*time.Second)))
	}
	if got := claimInPieces(t, s, t0.Add(time.Hour), 7); !slices.Equal(got, ids) {
		t.Fatalf("claimed 7 at a time:\n%s\nwant oldest first:\n%s", strings.Join(got, ","), strings.Join(ids, ","))
	}
}

func testClaimSameInstantEachOnce(t *testing.T, s asyncfn.Store) {
	const batches = 20
	for i := range batches {
		mustCreate(t, s, newBatch("echo", fmt.Sprint("b", i), t0))
	}
	if got := claimInPieces(t, s, t0.Add(time.Hour), 3); len(got) != batches {
		t.Fatalf("claimed %d of %d batches created at the same instant: %v", len(got), batches, got)
	}
}
