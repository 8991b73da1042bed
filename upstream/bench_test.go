package upstream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/caller"
	"github.com/asyncfn/asyncfn/upstream"
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

// BenchmarkRows sends 1,024-row batches, one request per row, to a local fast upstream
// in turns: through the row function at concurrency 32 (templating the URL, a header and
// a JSON body, picking the result path), and straight with a plain http.Client keeping
// 32 connections alive, 32 requests at once, the same body each time. It reports the
// requests per second of each and their ratio, rows/direct, whose goal is >= 0.8.
func BenchmarkRows(b *testing.B) {
	const rows, concurrency = 1024, 32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"choices":[{"message":{"content":"ok"}}]}`))
	}))
	defer srv.Close()
	f := newRows(b, srv.URL+"/v1/{{urlpath (arg 0)}}", func(c *upstream.RowConfig) {
		c.Concurrency = concurrency
		c.Headers = map[string]string{"X-Language": `{{header "language"}}`}
		c.Body = `{"model": "m", "messages": [{"role": "user", "content": {{json (arg 1)}}}]}`
		c.Result = "choices.0.message.content"
	})
	batch := make([]asyncfn.Row, rows)
	for i := range batch {
		batch[i] = asyncfn.Row{Number: i, Args: []json.RawMessage{json.RawMessage(`"id` + strconv.Itoa(i) + `"`), json.RawMessage(`"translate \"this\" please"`)}}
	}
	ctx := asyncfn.WithHeaders(context.Background(), map[string]string{"sf-custom-language": "fr"})

	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = concurrency
	client := &http.Client{Transport: t}
	body := []byte(`{"model": "m", "messages": [{"role": "user", "content": "translate \"this\" please"}]}`)
	direct := func() {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range concurrency {
			wg.Go(func() {
				for next.Add(1) <= rows {
					resp, err := client.Post(srv.URL+"/v1/id", "application/json", bytes.NewReader(body))
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
		wg.Wait()
	}

	var straight, through time.Duration
	for b.Loop() {
		start := time.Now()
		direct()
		mid := time.Now()
		if _, err := f.Call(ctx, batch); err != nil {
			b.Fatal(err)
		}
		straight, through = straight+mid.Sub(start), through+time.Since(mid)
	}
	n := float64(b.N * rows)
	b.ReportMetric(n/straight.Seconds(), "direct-req/s")
	b.ReportMetric(n/through.Seconds(), "rows-req/s")
	b.ReportMetric(straight.Seconds()/through.Seconds(), "rows/direct")
}
