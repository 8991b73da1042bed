package http_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	asyncfnhttp "github.com/asyncfn/asyncfn/http"
)

// TestRequireKey checks the middleware alone: each credential form, several keys, and
// the same 401 whatever is wrong.
func TestRequireKey(t *testing.T) {
	const old, cur = "old-key-aaaaaaaaaaaaaaaa", "new-key-bbbbbbbbbbbbbbbbbbbbbbbb"
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "in") })
	h := asyncfnhttp.RequireKey([]string{old, cur}, slog.New(slog.NewTextHandler(io.Discard, nil)))(ok)
	do := func(path string, set func(*http.Request)) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", path, nil)
		if set != nil {
			set(r)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	header := func(k, v string) func(*http.Request) { return func(r *http.Request) { r.Header.Set(k, v) } }
	for name, set := range map[string]func(*http.Request){
		"sf-custom-api-key old": header("sf-custom-api-key", old),
		"sf-custom-api-key new": header("sf-custom-api-key", cur),
		"Bearer old":            header("Authorization", "Bearer "+old),
		"Bearer new":            header("Authorization", "Bearer "+cur),
		"Basic new":             func(r *http.Request) { r.SetBasicAuth("someone", cur) },
		"a wrong header and a right one": func(r *http.Request) {
			r.Header.Set("sf-custom-api-key", "wrong")
			r.Header.Set("Authorization", "Bearer "+old)
		},
	} {
		if w := do("/f", set); w.Code != 200 || w.Body.String() != "in" {
			t.Errorf("%s: %d %q, want through", name, w.Code, w.Body)
		}
	}
	var first string
	for name, set := range map[string]func(*http.Request){
		"none":                   nil,
		"same length as old":     header("sf-custom-api-key", strings.Repeat("o", len(old))),
		"same length as new":     header("Authorization", "Bearer "+strings.Repeat("n", len(cur))),
		"shorter":                header("sf-custom-api-key", old[:5]),
		"longer":                 header("sf-custom-api-key", old+cur),
		"both keys concatenated": header("Authorization", "Bearer "+old+cur),
		"Basic with wrong":       func(r *http.Request) { r.SetBasicAuth(old, "x") },
		"unknown scheme":         header("Authorization", "Token "+old),
	} {
		w := do("/f", set)
		if w.Code != 401 {
			t.Errorf("%s: %d, want 401", name, w.Code)
			continue
		}
		if first == "" {
			first = w.Body.String()
		}
		if w.Body.String() != first {
			t.Errorf("%s: body %q differs from another 401's %q", name, w.Body, first)
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if w := do(path, nil); w.Code != 200 {
			t.Errorf("%s without a key: %d, want 200", path, w.Code)
		}
	}
	if w := do("/healthz/x", nil); w.Code != 401 {
		t.Errorf("/healthz/x without a key: %d, want 401", w.Code)
	}
	open := asyncfnhttp.RequireKey(nil, slog.Default())(ok)
	w := httptest.NewRecorder()
	open.ServeHTTP(w, httptest.NewRequest("GET", "/f", nil))
	if w.Code != 200 {
		t.Errorf("no keys: %d, want everything through", w.Code)
	}
}
