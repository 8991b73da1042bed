package sqlite_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/sqlite"
	"github.com/asyncfn/asyncfn/storetest"
)

// fill writes a file into dir until the disk is full.
func fill(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "no space") {
			return
		}
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			return
		}
	}
}

func payloadOf(id string, size int) []byte {
	return []byte(fmt.Sprintf(`{"data":[[0,%q]]}`, id+strings.Repeat("x", size)))
}

// TestDiskFull (correctness issue, defects 1 and 7): on a full disk every write fails with
// ErrNoWrites (answered 503, so Snowflake retries), Ping fails, and a claim that cannot
// commit returns no batch, since its lease is not held. Once the disk has room again,
// every batch stored is claimed with its own payload.
//
// Not parallel: mount runs as a child process, and a child forked while another test
// closes a store would hold that store's file lock for an instant.
func TestDiskFull(t *testing.T) {
	dir, resize := storetest.SmallDisk(t, 4<<20)
	s, err := sqlite.Open(context.Background(), filepath.Join(dir, "asyncfn.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	now := time.Now()
	stored := map[string][]byte{}
	for i := 0; ; i++ {
		id := fmt.Sprint("b", i)
		p := payloadOf(id, 200<<10)
		_, err := s.Create(ctx, &asyncfn.Batch{Key: asyncfn.Key{Function: "f", BatchID: id}, State: asyncfn.Queued,
			Payload: p, Digest: asyncfn.Digest(p), Rows: 1, MaxAttempts: 1000, CreatedAt: now, ExpiresAt: now.Add(time.Hour)})
		if err != nil {
			if !errors.Is(err, asyncfn.ErrNoWrites) || !errors.Is(err, asyncfn.ErrUnavailable) {
				t.Fatalf("Create on a full disk = %v, want ErrNoWrites", err)
			}
			break
		}
		stored[id] = p
		if i > 100 {
			t.Fatal("the disk never filled")
		}
	}
	fill(t, dir)
	// The write-ahead log reuses the room of a transaction that failed, so a few small
	// writes may still succeed: claim until one fails. A claim that fails must return
	// no batch.
	failed := 0
	for i := range 200 {
		got, err := s.Claim(ctx, asyncfn.ClaimParams{Owner: "w", Now: now.Add(time.Duration(i) * time.Millisecond), Lease: time.Nanosecond, Limit: 4})
		if err == nil {
			continue
		}
		if len(got) != 0 || !errors.Is(err, asyncfn.ErrNoWrites) {
			t.Fatalf("Claim on a full disk = %d batches, %v; want none and ErrNoWrites", len(got), err)
		}
		if failed++; failed == 5 {
			break
		}
	}
	if failed == 0 {
		t.Fatal("no claim failed: the test's disk is not full")
	}
	if err := s.Ping(ctx); !errors.Is(err, asyncfn.ErrNoWrites) {
		t.Errorf("Ping on a full disk = %v, want ErrNoWrites", err)
	}
	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	resize(64 << 20)
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping once the disk has room: %v", err)
	}
	claimed, err := s.Claim(ctx, asyncfn.ClaimParams{Owner: "w", Now: now.Add(time.Second), Lease: time.Minute, Limit: 1000})
	if err != nil || len(claimed) != len(stored) {
		t.Fatalf("Claim once the disk has room = %d batches, %v; want the %d stored", len(claimed), err, len(stored))
	}
	for _, b := range claimed {
		if !bytes.Equal(b.Payload, stored[b.Key.BatchID]) {
			t.Errorf("batch %s claimed with a payload of %d bytes; want its own payload", b.Key.BatchID, len(b.Payload))
		}
	}
}

// TestOpenDamaged (defect 7): a damaged file stops Open with a message that names the
// file and SQLite's finding, instead of failing batch by batch later.
func TestOpenDamaged(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
		want   string
	}{
		{"NotADatabase", func(t *testing.T, path string) {
			if err := os.WriteFile(path, bytes.Repeat([]byte("garbage!"), 4096), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "not a database"},
		{"DamagedPage", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			info, _ := f.Stat()
			// Every page past the first two (the header and the first table's root).
			junk := bytes.Repeat([]byte{0xA5}, int(info.Size())-2*8192)
			if _, err := f.WriteAt(junk, 2*8192); err != nil {
				t.Fatal(err)
			}
		}, "quick_check"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "asyncfn.db")
			s, err := sqlite.Open(context.Background(), path, sqlite.Options{})
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			for i := range 50 {
				p := payloadOf(fmt.Sprint(i), 20000)
				if _, err := s.Create(ctx, &asyncfn.Batch{Key: asyncfn.Key{Function: "f", BatchID: fmt.Sprint(i)}, State: asyncfn.Queued,
					Payload: p, Digest: asyncfn.Digest(p), Rows: 1, MaxAttempts: 3, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			os.Remove(path + "-wal")
			os.Remove(path + "-shm")
			tc.damage(t, path)
			s, err = sqlite.Open(context.Background(), path, sqlite.Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open of a damaged file succeeded")
			}
			if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, tc.want) {
				t.Errorf("Open of a damaged file = %q; want its path and %q", msg, tc.want)
			}
		})
	}
}
