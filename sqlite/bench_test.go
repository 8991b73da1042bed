package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/internal/storebench"
	"github.com/asyncfn/asyncfn/sqlite"
)

// BenchmarkTrip measures the trips of a batch through the store, 16 batches at once (see
// storebench.Run), for 1-row and 4,096-row batches.
func BenchmarkTrip(b *testing.B) {
	for _, rows := range []int{1, 4096} {
		b.Run(fmt.Sprint("rows=", rows), func(b *testing.B) {
			storebench.Run(b, rows, func(b *testing.B) asyncfn.Store {
				s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { s.Close() })
				return s
			})
		})
	}
}
