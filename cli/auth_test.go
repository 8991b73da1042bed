package cli_test

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	authKey1 = "k1-5f2b8c1e9d7a4b3c8e6f1a2d"
	authKey2 = "k2-0a9b8c7d6e5f4a3b2c1d0e9f"
)

func basic(user, key string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+key))
}

// TestAuthentication: with keys set, every route but /healthz and /readyz needs one of
// them, in any of the accepted forms; anything else is a 401 whose body is the same one
// sentence whatever was wrong.
func TestAuthentication(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keyFile, []byte("# rotated in on Monday\n"+authKey2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	configs := map[string]struct {
		args []string
		env  map[string]string
	}{
		"flags":    {[]string{"--api-key", authKey1, "--api-key", authKey2}, nil},
		"env":      {nil, map[string]string{"ASYNCFN_API_KEYS": authKey1 + ", " + authKey2}},
		"key file": {[]string{"--api-key", authKey1, "--api-key-file", keyFile}, nil},
	}
	for name, cfg := range configs {
		t.Run(name, func(t *testing.T) {
			s := opsStart(t, append([]string{"--sync-wait", "5s"}, cfg.args...), cfg.env)
			good := map[string][]string{
				"sf-custom-api-key, key 1":      {"sf-custom-api-key", authKey1},
				"sf-custom-api-key, key 2":      {"Sf-Custom-Api-Key", authKey2},
				"Authorization: Bearer, key 1":  {"Authorization", "Bearer " + authKey1},
				"Authorization: bearer, key 2":  {"Authorization", "bearer " + authKey2},
				"Authorization: Basic password": {"Authorization", basic("anyone", authKey2)},
			}
			for what, h := range good {
				id := "auth-" + strings.NewReplacer(" ", "-", ",", "", ":", "").Replace(what)
				if r := s.post("echo", id, `[[0,"x"]]`, h...); r.Status != 200 || r.Body != `{"data":[[0,"x"]]}` {
					t.Errorf("POST with %s: %d %q, want 200 with the rows", what, r.Status, r.Body)
				}
				if r := s.do("GET", "/echo", "", append([]string{"sf-external-function-query-batch-id", id}, h...)...); r.Status != 200 {
					t.Errorf("GET with %s: %d %q, want 200", what, r.Status, r.Body)
				}
			}
			sameLength := strings.Repeat("x", len(authKey1))
			bad := map[string][]string{
				"no key":                          nil,
				"wrong key of the same length":    {"sf-custom-api-key", sameLength},
				"wrong key of another length":     {"sf-custom-api-key", "nope"},
				"a key with one more character":   {"sf-custom-api-key", authKey1 + "x"},
				"a prefix of a key":               {"sf-custom-api-key", authKey1[:len(authKey1)-1]},
				"Bearer with a wrong key":         {"Authorization", "Bearer " + sameLength},
				"the key without Bearer":          {"Authorization", authKey1},
				"Basic with the key as user name": {"Authorization", basic(authKey1, "")},
				"an empty header":                 {"sf-custom-api-key", ""},
				"the key in another header":       {"X-Api-Key", authKey1},
			}
			var body string
			for what, h := range bad {
				for _, method := range []string{"POST", "GET"} {
					r := s.do(method, "/echo", `{"data":[[0,"x"]]}`, append([]string{"sf-external-function-query-batch-id", "auth-bad"}, h...)...)
					if r.Status != 401 {
						t.Errorf("%s with %s: %d %q, want 401", method, what, r.Status, r.Body)
						continue
					}
					if body == "" {
						body = r.Body
					}
					if r.Body != body {
						t.Errorf("%s with %s: body %q, want the same body as every 401, %q", method, what, r.Body, body)
					}
					if r.Header.Get("WWW-Authenticate") == "" {
						t.Errorf("%s with %s: 401 without WWW-Authenticate", method, what)
					}
				}
			}
			if strings.Count(body, ".") != 1 || !strings.HasSuffix(body, ".") || strings.Contains(body, "\n") {
				t.Errorf("401 body %q is not one sentence", body)
			}
			for _, word := range []string{"missing", "wrong", "header", "length", "bearer"} {
				if strings.Contains(strings.ToLower(body), word) {
					t.Errorf("401 body %q hints at what was wrong (%q)", body, word)
				}
			}
			// Operations pages are protected too; health checks stay open.
			for _, path := range []string{"/metrics", "/status", "/status.json"} {
				if r := s.do("GET", path, ""); r.Status != 401 {
					t.Errorf("GET %s without a key: %d, want 401", path, r.Status)
				}
				if r := s.do("GET", path, "", "Authorization", "Bearer "+authKey2); r.Status != 200 {
					t.Errorf("GET %s with a key: %d %q, want 200", path, r.Status, r.Body)
				}
			}
			if r := s.do("GET", "/", ""); r.Status != 401 {
				t.Errorf("GET / without a key: %d, want 401", r.Status)
			}
			for _, path := range []string{"/healthz", "/readyz"} {
				if r := s.do("GET", path, ""); r.Status != 200 {
					t.Errorf("GET %s without a key: %d %q, want 200", path, r.Status, r.Body)
				}
			}
		})
	}
}

// TestAuthenticationOffOnLoopback: without keys on a loopback address nothing asks for
// one (the default, for local runs and tests).
func TestAuthenticationOffOnLoopback(t *testing.T) {
	s := opsStart(t, nil, nil)
	if r := s.post("echo", "open-1", `[[0,"x"]]`); r.Status != 200 && r.Status != 202 {
		t.Errorf("POST without a key: %d %q", r.Status, r.Body)
	}
	if r := s.do("GET", "/status", ""); r.Status != 200 {
		t.Errorf("GET /status without a key: %d", r.Status)
	}
}
