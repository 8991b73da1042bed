package dynamodb_test

import (
	"testing"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/dynamodb/dyntest"
	"github.com/asyncfn/asyncfn/storetest"
)

func TestOverviewConformance(t *testing.T) {
	dyntest.Endpoint(t)
	storetest.RunOverview(t, func(t *testing.T) asyncfn.Store { return newStore(t) }, true)
}
