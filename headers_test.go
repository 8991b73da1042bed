package asyncfn_test

import (
	"context"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/sqlite"
)

// TestRequestHeaders: the function reads the custom and context headers and the batch id
// of the POST that brought its batch, through the store, but never the API key (nor the
// constant format header).
func TestRequestHeaders(t *testing.T) {
	t.Parallel()
	store, err := sqlite.Open(context.Background(), t.TempDir()+"/a.db", sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	headersOf := asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
		out := make([]any, len(rows))
		for i := range rows {
			out[i] = strings.Join([]string{asyncfn.RequestHeader(ctx, "sf-custom-language"),
				asyncfn.RequestHeader(ctx, "SF-Context-Current-User"), asyncfn.RequestHeader(ctx, "sf-custom-api-key"),
				asyncfn.RequestHeader(ctx, asyncfn.HeaderBatchID), asyncfn.RequestHeader(ctx, asyncfn.HeaderFormat)}, "|")
		}
		return out, nil
	})
	l := newLib(t, store, asyncfn.Function{Name: "h", Func: headersOf})
	req, _ := http.NewRequest(http.MethodPost, l.srv.URL+"/h", strings.NewReader(`{"data":[[0,"x"]]}`))
	req.Header.Set(asyncfn.HeaderBatchID, "b")
	req.Header.Set("sf-custom-language", "fr")
	req.Header.Set("sf-context-current-user", "ALICE")
	req.Header.Set("sf-custom-api-key", "secret-secret-secret")
	req.Header.Set(asyncfn.HeaderFormat, "json")
	resp, err := l.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST = %d", resp.StatusCode)
	}
	l.startPool(time.Minute, nil)
	if status, body := l.pollFor("h", "b"); status != http.StatusOK || body != `{"data":[[0,"fr|ALICE||b|"]]}` {
		t.Fatalf("GET = %d %s, want the language and user headers, the batch id, no API key and no format", status, body)
	}
}

// TestRequestHeadersAll: a function enumerates the batch's kept headers, and changing
// what it got changes nothing for the next reader.
func TestRequestHeadersAll(t *testing.T) {
	t.Parallel()
	if h := asyncfn.RequestHeaders(context.Background()); h != nil {
		t.Fatalf("RequestHeaders without headers = %v, want nil", h)
	}
	want := map[string]string{"sf-custom-language": "fr", "sf-context-current_user": "ALICE"}
	ctx := asyncfn.WithHeaders(context.Background(), maps.Clone(want))
	got := asyncfn.RequestHeaders(ctx)
	if !maps.Equal(got, want) {
		t.Fatalf("RequestHeaders = %v, want %v", got, want)
	}
	got["sf-custom-language"] = "de"
	if again := asyncfn.RequestHeaders(ctx); !maps.Equal(again, want) {
		t.Fatalf("RequestHeaders after changing a copy = %v, want %v", again, want)
	}
}
