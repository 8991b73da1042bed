package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/sqlite"
	"github.com/asyncfn/asyncfn/storetest"
)

func open(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) asyncfn.Store {
		return open(t, filepath.Join(t.TempDir(), "asyncfn.db"))
	})
}
