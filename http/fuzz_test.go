package http_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	asyncfnhttp "github.com/asyncfn/asyncfn/http"
	"github.com/asyncfn/asyncfn/memory"
)

// fuzzMaxBody is small so that the fuzzer reaches the size limit, compressed or not.
const fuzzMaxBody = 4096

// validOnWire reports whether a header value can reach a server over HTTP/1.1 at all:
// net/http refuses control characters other than tab in header values.
func validOnWire(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// FuzzHandlerPOST sends a random body with a random Content-Encoding and batch id through
// the real handler: it must never panic or answer 5xx, error bodies are one sentence, and
// an accepted batch is answered consistently (the same again on a retried POST, then 200
// with one row per input row once a worker has run it).
func FuzzHandlerPOST(f *testing.F) {
	good := []byte(`{"data":[[0,"a",1],[1,null],[2,{"k":[1,2]}]]}`)
	f.Add(good, "", "q:1:1:0:0")
	f.Add(good, "identity", "b")
	f.Add(gzipped(f, good), "gzip", "g")
	f.Add(zlibbed(f, good), "deflate", "d")
	f.Add(deflated(f, good), "deflate", "raw")
	f.Add(gzipped(f, []byte(`{"data":[[0,"`+strings.Repeat(" ", 2*fuzzMaxBody)+`"]]}`)), "gzip", "bomb")
	f.Add([]byte(`{"data":[[1,1]]}`), "", "order")
	f.Add([]byte(`{"data":[5]}`), "", "row")
	f.Add([]byte(`{"nodata":[]}`), "", "nodata")
	f.Add([]byte(`not json`), "gzip", "notgzip")
	f.Add([]byte(`{"data":[]}`), "br", "br")
	f.Add(good, "", "")
	f.Fuzz(func(t *testing.T, body []byte, encoding, batchID string) {
		if !validOnWire(encoding) || !validOnWire(batchID) {
			t.Skip("not a header value net/http lets through")
		}
		reg, err := asyncfn.NewRegistry(asyncfn.Function{Name: "echo", Func: asyncfn.Echo})
		if err != nil {
			t.Fatal(err)
		}
		store := memory.New()
		defer store.Close()
		rc := asyncfn.DefaultRuntimeConfig()
		rc.Service.SyncWait, rc.Service.PollWait = 0, 0
		rt, err := asyncfn.NewRuntime(store, reg, discard, rc)
		if err != nil {
			t.Fatal(err)
		}
		defer rt.Stop()
		h := asyncfnhttp.NewHandler(rt.Service(), discard, asyncfnhttp.Config{MaxBodyBytes: fuzzMaxBody})

		send := func(method string, body []byte) *httptest.ResponseRecorder {
			req := httptest.NewRequest(method, "/echo", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if encoding != "" {
				req.Header.Set("Content-Encoding", encoding)
			}
			if batchID != "" {
				req.Header.Set(asyncfn.HeaderBatchID, batchID)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			got := w.Body.String()
			switch {
			case w.Code >= 500:
				t.Fatalf("%s: status %d %q", method, w.Code, got)
			case w.Code >= 300:
				if got == "" || strings.ContainsAny(got, "\r\n") || !strings.HasSuffix(got, ".") {
					t.Fatalf("%s: status %d with a body that is not one sentence on one line: %q", method, w.Code, got)
				}
			}
			return w
		}

		first := send(http.MethodPost, body)
		if first.Code != http.StatusAccepted {
			return
		}
		// Accepted: a retried POST answers from the stored state; a GET sees it queued.
		if again := send(http.MethodPost, body); again.Code != http.StatusAccepted {
			t.Fatalf("retried POST = %d %q, want 202", again.Code, again.Body)
		}
		if poll := send(http.MethodGet, nil); poll.Code != http.StatusAccepted {
			t.Fatalf("GET = %d %q, want 202", poll.Code, poll.Body)
		}
		// A worker runs it: the GET then answers 200 with each row's first argument, in order.
		pool := rt.Pool()
		key := asyncfn.Key{Function: "echo", BatchID: batchID}
		if err := pool.Process(context.Background(), key); err != nil {
			t.Fatal(err)
		}
		done := send(http.MethodGet, nil)
		if done.Code != http.StatusOK {
			t.Fatalf("GET after the worker ran = %d %q, want 200", done.Code, done.Body)
		}
		stored, err := store.Get(context.Background(), key, time.Now(), true)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := asyncfn.ParseRows(stored.Payload)
		if err != nil {
			t.Fatalf("the stored payload does not parse: %v", err)
		}
		var out struct {
			Data [][]json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(done.Body.Bytes(), &out); err != nil || len(out.Data) != len(rows) {
			t.Fatalf("answer %q (%v): want %d rows", done.Body, err, len(rows))
		}
		for i, row := range out.Data {
			want := json.RawMessage("null")
			if len(rows[i].Args) > 0 {
				want = rows[i].Args[0]
			}
			if len(row) != 2 || string(row[0]) != strconv.Itoa(i) || !bytes.Equal(row[1], want) {
				t.Fatalf("answer row %d = %s, want [%d,%s]", i, row, i, want)
			}
		}
	})
}
