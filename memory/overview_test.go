package memory_test

import (
	"testing"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/memory"
	"github.com/asyncfn/asyncfn/storetest"
)

func TestOverviewConformance(t *testing.T) {
	storetest.RunOverview(t, func(t *testing.T) asyncfn.Store {
		s := memory.New()
		t.Cleanup(func() { s.Close() })
		return s
	}, false)
}
