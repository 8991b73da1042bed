package upstream_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/caller"
)

// BenchmarkCall sends 4,096-row batches to a local fast upstream (echo) in turns:
// straight, as Snowflake would (package caller, its body encoded once), and through the
// function (encoding the rows, the batch id and headers, the same checks of the answer).
// Taking turns, both see the same load of the machine. It reports the rows per second of
// each and their ratio, upstream/direct, whose goal is >= 0.9.
func BenchmarkCall(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(echo))
	defer srv.Close()
	args := caller.SyntheticRows(4096)
	rows := make([]asyncfn.Row, len(args))
	for i, a := range args {
		rows[i] = asyncfn.Row{Number: i, Args: a}
	}
	client, err := caller.NewClient(caller.Config{URL: srv.URL, Concurrency: 1})
	if err != nil {
		b.Fatal(err)
	}
	p, err := client.Encode(args)
	if err != nil {
		b.Fatal(err)
	}
	f := newFunction(b, srv.URL, nil)
	ctx := asyncfn.WithHeaders(context.Background(), map[string]string{"sf-custom-language": "en"})
	var direct, through time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := client.Call(context.Background(), p); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if _, err := f.Call(ctx, rows); err != nil {
			b.Fatal(err)
		}
		direct, through = direct+mid.Sub(start), through+time.Since(mid)
	}
	n := float64(b.N * len(rows))
	b.ReportMetric(n/direct.Seconds(), "direct-rows/s")
	b.ReportMetric(n/through.Seconds(), "upstream-rows/s")
	b.ReportMetric(direct.Seconds()/through.Seconds(), "upstream/direct")
}
