package cli_test

import (
	"net/http"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/comprehend/comprehendtest"
)

// comprehendEnv gives the AWS SDK the credentials the fake Comprehend expects and no
// region or shared configuration of the machine's. The SDK reads the process's
// environment, so the tests that call it cannot run in parallel.
func comprehendEnv(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", comprehendtest.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
}

// TestComprehendServe: serve --comprehend (settings by flag and by environment variable)
// answers /comprehend from Comprehend, and /metrics counts its calls and billed units.
func TestComprehendServe(t *testing.T) {
	comprehendEnv(t)
	fake := comprehendtest.New(t, nil)
	s := opsStart(t, []string{"--comprehend", "--comprehend-region", "us-east-1", "--sync-wait", "10s"},
		map[string]string{"ASYNCFN_COMPREHEND_ENDPOINT": fake.URL, "ASYNCFN_COMPREHEND_LABEL": "true"})
	r := s.post("comprehend", "c1", `[[0,"I love it"],[1,null],[2,"J'adore","FR"]]`)
	labelled := `{"Sentiment":"POSITIVE",` + comprehendtest.ScoreRow[1:]
	if want := `{"data":[[0,` + labelled + `],[1,null],[2,` + labelled + `]]}`; r.Status != 200 || r.Body != want {
		t.Fatalf("POST /comprehend: %d %s\nwant 200 %s", r.Status, r.Body, want)
	}
	sent := fake.Requests()
	sort.Slice(sent, func(i, j int) bool { return sent[i].LanguageCode < sent[j].LanguageCode })
	want := []comprehendtest.Request{{LanguageCode: "en", TextList: []string{"I love it"}}, {LanguageCode: "fr", TextList: []string{"J'adore"}}}
	if !reflect.DeepEqual(sent, want) {
		t.Errorf("requests %q, want %q", sent, want)
	}
	m := s.scrape()
	if calls, units := m.value("asyncfn_comprehend_calls_total", "outcome", "ok"), m.value("asyncfn_comprehend_billed_units_total"); calls != 2 || units != 6 {
		t.Errorf("metrics: %v calls, %v billed units; want 2 and 6", calls, units)
	}
	// Without --comprehend there is no such function.
	plain := opsStart(t, nil, nil)
	if r := plain.post("comprehend", "c2", `[[0,"a"]]`); r.Status != http.StatusNotFound {
		t.Errorf("POST /comprehend without --comprehend: %d %s", r.Status, r.Body)
	}
}

// TestComprehendWorker: a worker process with --comprehend runs the batches a front end
// accepted for it, in the language of the function's HEADERS (sf-custom-language), which
// travels with the batch through the store.
func TestComprehendWorker(t *testing.T) {
	comprehendEnv(t)
	fake := comprehendtest.New(t, nil)
	store := filepath.Join(t.TempDir(), "a.db")
	flags := []string{"--comprehend", "--comprehend-region", "us-east-1", "--comprehend-endpoint", fake.URL}
	front := startServer(t, serverConfig{store: store, args: append([]string{"--workers", "0", "--sync-wait", "0", "--poll-wait", "0"}, flags...)})
	if r := front.post("comprehend", "w1", rows("great"), "sf-custom-language", "de"); r.Status != http.StatusAccepted {
		t.Fatalf("POST = %v", r)
	}
	if err := front.Stop(); err != nil { // one process at a time on a SQLite file
		t.Fatal(err)
	}
	w, err := runMain(t, append([]string{"worker", "--store", store, "--workers", "1"}, flags...), nil)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the worker to call Comprehend", func() bool { return len(fake.Requests()) == 1 })
	if err := w.Stop(); err != nil {
		t.Fatal(err)
	}
	if sent := fake.Requests(); sent[0].LanguageCode != "de" {
		t.Errorf("the worker called Comprehend in %q, want de from the sf-custom-language header", sent[0].LanguageCode)
	}
	s := startServer(t, serverConfig{store: store, args: append([]string{"--poll-wait", "0"}, flags...)})
	checkOK(t, s.get("comprehend", "w1"), `{"data":[[0,`+comprehendtest.ScoreRow+`]]}`)
}

// TestComprehendFlagErrors: a bad setting stops the command with one line naming the flag.
func TestComprehendFlagErrors(t *testing.T) {
	comprehendEnv(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--comprehend-region", "us-east-1", "--comprehend-language", "xx"}, `--comprehend-language "xx": Amazon Comprehend detects sentiment in en, es,`},
		{[]string{"--comprehend-region", "us-east-1", "--comprehend-concurrency", "0"}, "--comprehend-concurrency 0: must be positive"},
		{[]string{"--comprehend-region", "us-east-1", "--comprehend-long-text", "cut"}, `--comprehend-long-text "cut": use truncate, fail or null`},
		{nil, "--comprehend-region is not set and the SDK found none: set it or AWS_REGION"},
	} {
		for _, cmd := range []string{"serve", "worker"} {
			args := append([]string{cmd, "--store", filepath.Join(t.TempDir(), "a.db"), "--comprehend"}, tc.args...)
			_, err := runMain(t, args, nil, asyncfn.Function{Name: "echo", Func: asyncfn.Echo})
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%v: %v, want one line with %q", args, err, tc.want)
			}
		}
	}
}
