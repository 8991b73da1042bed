package memory_test

import (
	"testing"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/memory"
	"github.com/asyncfn/asyncfn/storetest"
)

// TestConformance is the whole of storetest that applies to the memory store: it lives in
// one process, so no two stores share it (storetest.RunShared), nothing else notifies
// (storetest.RunNotifier), and it has no backend to cut off (storetest.RunUnreachable).
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) asyncfn.Store {
		s := memory.New()
		t.Cleanup(func() { s.Close() })
		return s
	})
}
