package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
)

// FuzzRowTemplates renders a body template over an argument and picks a result path
// in an answer: no panic whatever they are; an argument written with json gives valid
// JSON; the path's value is the one decoding the answer finds.
func FuzzRowTemplates(f *testing.F) {
	f.Add(`{"a": {{json (arg 0)}}}`, `"he said \"hi\" 😀"`, `{"choices":[{"message":{"content":"x"}}]}`, "choices.0.message.content")
	f.Add(`{{arg 3}}{{header "x"}}`, `12345678901234567890.5`, `[1, [2, {"k": null}]]`, "1.1.k")
	f.Add(`{{range args}}{{.}}{{end}}`, `null`, ` {"a\"b": {"": 1}, "a": [] } `, `a"b`)
	f.Add(`{{urlpath (arg 0)}}`, `{"k":[1,"\u2028"]}`, `{"a":{"a":{"a":true}}}`, "a.a.a")
	f.Add(`{{json args}}`, `[]`, `{"a": 1, "b": 2, "a": 3}`, "a")
	f.Add(`{{urlquery (arg 0)}}/{{urlpath (arg 0)}}?{{arg 0}}`, `"a b/c?d=é"`, `{}`, "")
	f.Add(`{{arg 0}}{{json (arg 1)}}`, `"x"`, `{}`, "")
	f.Add(`x{{secret "k"}}{{secret "k"}}{{header "x"}}{{json (arg 0)}}`, `12.50`, `{}`, "")
	f.Fuzz(func(t *testing.T, body, arg, answer, path string) {
		if !json.Valid([]byte(arg)) {
			return // the runtime gives rows of valid JSON only
		}
		cfg := DefaultRowConfig()
		cfg.Name, cfg.URL, cfg.Body, cfg.Result = "fuzz", "https://example.com/", body, path
		cfg.Secrets = map[string]Secret{"k": {Value: "v", Hosts: []string{"example.com"}}}
		cfg.RequestTimeout = time.Second
		fn, err := NewRows(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			return // a template or path Validate refuses
		}
		ctx := asyncfn.WithHeaders(context.Background(), map[string]string{"sf-custom-x": arg})
		req, err := fn.tpl.render(ctx, []json.RawMessage{json.RawMessage(arg)})
		if err == nil && body == `{"a": {{json (arg 0)}}}` && !json.Valid(req.body) {
			t.Errorf("body %s is not JSON", req.body)
		}
		// The same templates through text/template alone: segments must write the same.
		slow, _ := NewRows(cfg, slog.New(slog.DiscardHandler))
		clear(slow.tpl.fast)
		slowReq, wantErr := slow.tpl.render(ctx, []json.RawMessage{json.RawMessage(arg)})
		switch {
		case (err == nil) != (wantErr == nil):
			t.Errorf("template %q, argument %s: error %v, text/template's %v", body, arg, err, wantErr)
		case err != nil && err.Error() != wantErr.Error():
			t.Errorf("template %q, argument %s: error %q, text/template's %q", body, arg, err, wantErr)
		case err == nil && (string(req.body) != string(slowReq.body) || !slices.Equal(req.secrets, slowReq.secrets)):
			t.Errorf("template %q, argument %s: %q (secrets %v), text/template's %q (%v)", body, arg, req.body, req.secrets, slowReq.body, slowReq.secrets)
		}
		v, msg := fn.value([]byte(answer))
		want, found := decodePath([]byte(answer), fn.path)
		switch {
		case msg == "" && (!found || !equalJSON(v, want)):
			t.Errorf("%s in %s: %s, want %s (found %v)", path, answer, v, want, found)
		case msg != "" && found && json.Valid([]byte(answer)) && len(answer) <= 10<<20:
			t.Errorf("%s in %s: %s, want %s", path, answer, msg, want)
		}
	})
}

// decodePath is what lookup finds, by decoding: the reference it is checked against.
func decodePath(answer []byte, path []string) (json.RawMessage, bool) {
	if len(bytes.TrimSpace(answer)) == 0 && path == nil {
		return nil, true
	}
	v := json.RawMessage(answer)
	for _, key := range path {
		var obj map[string]json.RawMessage
		var arr []json.RawMessage
		switch {
		case json.Unmarshal(v, &obj) == nil && obj != nil:
			var ok bool
			if v, ok = obj[key]; !ok {
				return nil, false
			}
		case json.Unmarshal(v, &arr) == nil && arr != nil:
			n, err := strconv.Atoi(key)
			if err != nil || n < 0 || n >= len(arr) || strconv.Itoa(n) != key {
				return nil, false
			}
			v = arr[n]
		default:
			return nil, false
		}
	}
	return v, true
}

func equalJSON(a, b []byte) bool {
	var x, y bytes.Buffer
	return json.Compact(&x, a) == nil && json.Compact(&y, b) == nil && x.String() == y.String() || strings.TrimSpace(string(a)) == strings.TrimSpace(string(b))
}
