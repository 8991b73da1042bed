package process_test

import (
	"context"
	"testing"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/caller"
	"github.com/asyncfn/asyncfn/process"
)

// echoScript answers each row with its first argument, as asyncfn.Echo does.
const echoScript = `
import json, sys
for line in sys.stdin:
    print(json.dumps({"data": [[r[0], r[1]] for r in json.loads(line)["data"]]}), flush=True)
`

// BenchmarkEcho runs a batch of 4,096 short texts through the built-in asyncfn.Echo and
// through a Python echo script and cat in a pool of one process, each call followed by the
// encoding of its result, as a worker does: the cost of the exec kind's round trip.
func BenchmarkEcho(b *testing.B) {
	var rows []asyncfn.Row
	for i, args := range caller.SyntheticRows(4096) {
		rows = append(rows, asyncfn.Row{Number: i, Args: args})
	}
	run := func(b *testing.B, fn asyncfn.Func) {
		b.ReportAllocs()
		for b.Loop() {
			values, err := fn.Call(context.Background(), rows)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := asyncfn.EncodeResult(rows, values); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("builtin", func(b *testing.B) { run(b, asyncfn.Echo) })
	b.Run("exec", func(b *testing.B) {
		p, _ := newPool(b, echoScript, nil)
		run(b, p)
	})
	// cat answers each request line with itself, a valid answer for rows of one
	// argument: the cost of the pipes and of checking the answer, without Python's.
	b.Run("cat", func(b *testing.B) {
		p, _ := newPool(b, "", func(cfg *process.Config) { cfg.Command = []string{"cat"} })
		run(b, p)
	})
}
