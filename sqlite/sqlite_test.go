package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/sqlite"
	"github.com/asyncfn/asyncfn/storetest"
)

func open(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConformance is the whole of storetest that applies to SQLite: one process holds a
// database file (Open locks it), so no two stores share a backend (storetest.RunShared),
// nothing else notifies (storetest.RunNotifier), and a local file has no network to cut
// (storetest.RunUnreachable; a failing disk is faults_test.go's).
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) asyncfn.Store {
		return open(t, filepath.Join(t.TempDir(), "asyncfn.db"))
	})
}
