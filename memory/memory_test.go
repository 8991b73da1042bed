package memory_test

import (
	"testing"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/memory"
	"github.com/asyncfn/asyncfn/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) asyncfn.Store {
		s := memory.New()
		t.Cleanup(func() { s.Close() })
		return s
	})
}
