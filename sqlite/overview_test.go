package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/storetest"
)

func TestOverviewConformance(t *testing.T) {
	storetest.RunOverview(t, func(t *testing.T) asyncfn.Store {
		return open(t, filepath.Join(t.TempDir(), "asyncfn.db"))
	}, false)
}
