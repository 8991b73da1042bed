package sqlite_test

import (
	"context"
	"database/sql"
	"maps"
	"path/filepath"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/sqlite"
)

// TestUpgradeFromVersion1: a file written by the previous schema (no headers column) is
// upgraded when opened, keeping its batches, and then keeps headers.
func TestUpgradeFromVersion1(t *testing.T) {
	t.Parallel()
	ctx, now := context.Background(), time.Now()
	s, old := openOld(t, now, `ALTER TABLE batches DROP COLUMN headers; DROP TABLE saved_rows;
		ALTER TABLE batches DROP COLUMN saved_bytes; PRAGMA user_version = 1`)
	if got, err := s.Get(ctx, old.Key, now, false); err != nil || got.Headers != nil {
		t.Fatalf("the old batch after the upgrade = %+v, %v", got, err)
	}
	b := *old
	b.Key.BatchID, b.Headers = "new", map[string]string{"sf-custom-x": "1"}
	if _, err := s.Create(ctx, &b); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, b.Key, now, false); err != nil || !maps.Equal(got.Headers, b.Headers) {
		t.Fatalf("a new batch after the upgrade = %+v, %v; want headers %v", got, err, b.Headers)
	}
}

// TestUpgradeFromVersion2: a file written before checkpoints (no saved_bytes column, no
// saved_rows table) is upgraded when opened, keeping its batches, which then save rows.
func TestUpgradeFromVersion2(t *testing.T) {
	t.Parallel()
	ctx, now := context.Background(), time.Now()
	s, old := openOld(t, now, `DROP TABLE saved_rows; ALTER TABLE batches DROP COLUMN saved_bytes; PRAGMA user_version = 2`)
	if _, err := s.ClaimKey(ctx, old.Key, asyncfn.ClaimParams{Owner: "w", Now: now, Lease: time.Minute, Limit: 1}); err != nil {
		t.Fatal(err)
	}
	saved := []asyncfn.SavedRow{{Number: 0, Value: []byte(`"one"`)}}
	if err := s.Checkpoint(ctx, old.Key, "w", now, saved); err != nil {
		t.Fatalf("Checkpoint of the old batch after the upgrade: %v", err)
	}
	if got, err := s.Get(ctx, old.Key, now, true); err != nil || len(got.Saved) != 1 || string(got.Saved[0].Value) != `"one"` {
		t.Fatalf("the old batch after a checkpoint = %+v, %v; want its saved row", got, err)
	}
}

// openOld writes a store holding one queued batch, turns it into an earlier schema's file
// with downgrade (SQL), and opens it again, which upgrades it; it returns the store and
// the batch.
func openOld(t *testing.T, now time.Time, downgrade string) (*sqlite.Store, *asyncfn.Batch) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "asyncfn.db")
	s := open(t, path)
	old := &asyncfn.Batch{Key: asyncfn.Key{Function: "f", BatchID: "old"}, State: asyncfn.Queued, Payload: []byte(`{"data":[[0,1]]}`),
		Digest: "d", Rows: 1, MaxAttempts: 3, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if _, err := s.Create(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(downgrade); err != nil {
		t.Fatal(err)
	}
	db.Close()
	return open(t, path), old
}
