package dynamodb_test

import (
	"testing"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/dynamodb/dyntest"
	"github.com/asyncfn/asyncfn/storetest"
)

func TestOverviewConformance(t *testing.T) {
	forShards(t, func(t *testing.T, n int) {
		storetest.RunOverview(t, func(t *testing.T) asyncfn.Store { return open(t, withShards(t, dyntest.Table(t), n)) }, true)
	})
}
