package postgres_test

import (
	"testing"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/internal/storebench"
	"github.com/asyncfn/asyncfn/postgres/pgtest"
)

// BenchmarkTrip measures the trips of a batch through the store, 16 batches at once (see
// storebench.Run), for 1-row and 4,096-row batches.
func BenchmarkTrip(b *testing.B) {
	storebench.Run(b, func(b *testing.B) asyncfn.Store { return open(b, pgtest.Schema(b)) })
}
