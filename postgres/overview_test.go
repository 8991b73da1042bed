package postgres_test

import (
	"testing"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/postgres/pgtest"
	"github.com/asyncfn/asyncfn/storetest"
)

func TestOverviewConformance(t *testing.T) {
	storetest.RunOverview(t, func(t *testing.T) asyncfn.Store {
		return open(t, pgtest.Schema(t))
	}, false)
}
