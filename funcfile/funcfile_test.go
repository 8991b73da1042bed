package funcfile_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/funcfile"
	"github.com/asyncfn/asyncfn/process"
	"github.com/asyncfn/asyncfn/upstream"
)

const secret = "s3cr3t-t0ken-never-shown"

func env(name string) string {
	if name == "CLASSIFY_TOKEN" {
		return secret
	}
	return ""
}

// write puts text in a file functions.yaml of a new directory and returns its path.
func write(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "functions.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLoad: every key of both kinds lands in its Config, unset keys keep the documented
// defaults, secrets are read from the environment and from files (relative to the file),
// and relative directories are the file's.
func TestLoad(t *testing.T) {
	t.Parallel()
	path := write(t, `
functions:
  - name: classify
    max-attempts: 5
    backoff: 2s
    http:
      url: http://127.0.0.1:9000/classify?key=abc
      timeout: 20m
      concurrency: 4
      request-attempts: 6
      min-backoff: 50ms
      max-backoff: 5s
      poll-min: 10ms
      poll-max: 1s
      headers:
        X-Team: data
        Authorization: {env: CLASSIFY_TOKEN, prefix: "Bearer "}
  - name: score
    exec:
      command: ["sh", "-c", "cat"]
      processes: 2
      timeout: 30s
      dir: sub
      grace-period: 1s
      max-line-bytes: 1000
      env:
        MODEL: small
        API_KEY: {file: key.txt}
  - name: plain
    exec:
      command: [sh]
`)
	dir := filepath.Dir(path)
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.txt"), []byte("file-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := funcfile.Load(path, env)
	if err != nil {
		t.Fatal(err)
	}
	wantHTTP := upstream.Config{Name: "classify", URL: "http://127.0.0.1:9000/classify?key=abc", Timeout: 20 * time.Minute,
		Headers: map[string]string{"X-Team": "data", "Authorization": "Bearer " + secret}, Concurrency: 4, RequestAttempts: 6,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 5 * time.Second, PollMin: 10 * time.Millisecond, PollMax: time.Second}
	wantExec := process.Config{Name: "score", Command: []string{"sh", "-c", "cat"}, Processes: 2, Timeout: 30 * time.Second,
		Dir: filepath.Join(dir, "sub"), Env: map[string]string{"MODEL": "small", "API_KEY": "file-secret"}, GracePeriod: time.Second, MaxLineBytes: 1000}
	plain := process.DefaultConfig()
	plain.Name, plain.Command, plain.Dir = "plain", []string{"sh"}, dir
	want := []funcfile.Function{
		{Name: "classify", Line: 3, MaxAttempts: 5, Backoff: 2 * time.Second, HTTP: &wantHTTP},
		{Name: "score", Line: 18, Exec: &wantExec},
		{Name: "plain", Line: 29, Exec: &plain},
	}
	if !reflect.DeepEqual(f.Functions, want) {
		t.Errorf("functions\n%+v\nwant\n%+v", f.Functions, want)
	}
	if got := f.Functions[0].Describe(); got != "http http://127.0.0.1:9000/classify" {
		t.Errorf("Describe = %q, want the URL without its query", got)
	}
	if got := f.Functions[1].Describe(); got != `exec sh -c cat` {
		t.Errorf("Describe = %q", got)
	}
}

// TestLoadRowMode: an http function in row mode, its secrets pinned to hosts and its
// checkpoints.
func TestLoadRowMode(t *testing.T) {
	t.Parallel()
	path := write(t, `
functions:
  - name: chat
    checkpoint: {rows: 10, interval: 2s}
    http:
      mode: row
      url: https://api.openai.com/v1/chat/completions
      headers:
        Authorization: 'Bearer {{secret "openai"}}'
      body: '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": {{json (arg 0)}}}]}'
      secrets:
        openai: {env: CLASSIFY_TOKEN, hosts: [api.openai.com]}
      result: choices.0.message.content
      on-error: "null"
      concurrency: 4
      rate: 2.5
      burst: 5
      request-attempts: 4
      request-timeout: 30s
      timeout: 1h
`)
	f, err := funcfile.Load(path, env)
	if err != nil {
		t.Fatal(err)
	}
	want := upstream.DefaultRowConfig()
	want.Name, want.URL = "chat", "https://api.openai.com/v1/chat/completions"
	want.Headers = map[string]string{"Authorization": `Bearer {{secret "openai"}}`}
	want.Body = `{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": {{json (arg 0)}}}]}`
	want.Secrets = map[string]upstream.Secret{"openai": {Value: secret, Hosts: []string{"api.openai.com"}}}
	want.Result, want.OnError = "choices.0.message.content", "null"
	want.Concurrency, want.Rate, want.Burst, want.RequestAttempts = 4, 2.5, 5, 4
	want.RequestTimeout, want.Timeout = 30*time.Second, time.Hour
	fn := f.Functions[0]
	if !reflect.DeepEqual(fn.Rows, &want) || fn.HTTP != nil {
		t.Errorf("row config\n%+v\nwant\n%+v", fn.Rows, &want)
	}
	if fn.Checkpoint == nil || *fn.Checkpoint != (asyncfn.CheckpointConfig{Rows: 10, Interval: 2 * time.Second}) {
		t.Errorf("checkpoint %+v, want 10 rows or 2s", fn.Checkpoint)
	}
	if got := fn.Describe(); got != "http per row: https://api.openai.com/v1/chat/completions" {
		t.Errorf("Describe = %q", got)
	}
}

// TestErrors: each mistake is an error that names the file and the line at fault, and
// says what to write instead; none quotes a secret.
func TestErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, text string
		line       int
		says       string
	}{
		{"empty", "", 0, "the file is empty"},
		{"syntax", "functions:\n  - name: a\n    http: url: x\n", 3, "not valid YAML: mapping values are not allowed"},
		{"top-level key", "function:\n  - name: a\n", 1, "unknown key function (the keys are functions)"},
		{"no functions", "functions: []\n", 1, "list at least one function"},
		{"not a mapping", "functions:\n  - classify\n", 2, "a function must be a mapping"},
		{"no name", "functions:\n  - http: {url: http://h/}\n", 2, "has no name"},
		{"bad name", "functions:\n  - name: a/b\n    exec: {command: [sh]}\n", 2, `function name "a/b": use letters, digits`},
		{"no kind", "functions:\n  - name: a\n", 2, "neither http nor exec"},
		{"both kinds", "functions:\n  - name: a\n    http: {url: http://h/}\n    exec: {command: [sh]}\n", 4, "both http and exec"},
		{"unknown function key", "functions:\n  - name: a\n    retries: 3\n    http: {url: http://h/}\n", 3, "unknown key retries (the keys are name, max-attempts"},
		{"unknown http key", "functions:\n  - name: a\n    http:\n      url: http://h/\n      timout: 1m\n", 5, "a: http: unknown key timout (the keys are mode, url, timeout,"},
		{"bad duration", "functions:\n  - name: a\n    http:\n      url: http://h/\n      timeout: 15 minutes\n", 5, `timeout: "15 minutes" is not a positive duration`},
		{"negative duration", "functions:\n  - name: a\n    http:\n      url: http://h/\n      poll-min: -1s\n", 5, "poll-min"},
		{"wrong type", "functions:\n  - name: a\n    http:\n      url: http://h/\n      concurrency: many\n", 5, `concurrency: "many" is not a positive whole number`},
		{"list for a number", "functions:\n  - name: a\n    http:\n      url: http://h/\n      concurrency: [1]\n", 5, "concurrency must be a whole number"},
		{"no url", "functions:\n  - name: a\n    http:\n      timeout: 1m\n", 4, "url is required"},
		{"bad url", "functions:\n  - name: a\n    http:\n      url: ftp://h/x\n", 4, "url \"ftp://h/x\": use an http or https URL"},
		{"validate names the key's line", "functions:\n  - name: a\n    http:\n      url: http://h/\n      min-backoff: 5s\n      max-backoff: 1s\n", 6, "max-backoff 1s: must not be below min-backoff 5s"},
		{"duplicate key", "functions:\n  - name: a\n    http:\n      url: http://h/\n      url: http://i/\n", 5, "the key url is given twice"},
		{"duplicate function", "functions:\n  - name: a\n    http: {url: http://h/}\n  - name: a\n    exec: {command: [sh]}\n", 4, "declared twice (first at line 2)"},
		{"command as text", "functions:\n  - name: a\n    exec:\n      command: python3 score.py\n", 4, "command must be a list"},
		{"no command", "functions:\n  - name: a\n    exec:\n      processes: 2\n", 4, "command is required"},
		{"program not found", "functions:\n  - name: a\n    exec:\n      command: [no-such-program-anywhere]\n", 4, "command no-such-program-anywhere: not found in PATH"},
		{"relative program not found", "functions:\n  - name: a\n    exec:\n      command: [./score.sh]\n", 4, "command ./score.sh: no such file"},
		{"dir missing", "functions:\n  - name: a\n    exec:\n      command: [sh]\n      dir: nowhere\n", 5, "is not a directory"},
		{"secret variable unset", "functions:\n  - name: a\n    http:\n      url: http://h/\n      headers:\n        Authorization: {env: UNSET_TOKEN}\n", 6, "headers Authorization: the environment variable UNSET_TOKEN is not set"},
		{"secret file missing", "functions:\n  - name: a\n    exec:\n      command: [sh]\n      env:\n        KEY: {file: missing.txt}\n", 6, "env KEY: open"},
		{"secret both sources", "functions:\n  - name: a\n    exec:\n      command: [sh]\n      env:\n        KEY: {env: CLASSIFY_TOKEN, file: k}\n", 6, "one of env and file"},
		{"secret unknown key", "functions:\n  - name: a\n    exec:\n      command: [sh]\n      env:\n        KEY: {var: X}\n", 6, "unknown key var (the keys are env, file, prefix)"},
		{"bad mode", "functions:\n  - name: a\n    http: {mode: rows, url: http://h/}\n", 3, "mode is batch"},
		{"row key in batch mode", "functions:\n  - name: a\n    http:\n      url: http://h/\n      result: x\n", 5, "result applies to mode: row only"},
		{"batch key in row mode", "functions:\n  - name: a\n    http:\n      mode: row\n      url: http://h/\n      poll-min: 1s\n", 6, "poll-min applies to mode: batch only"},
		{"secret without hosts", "functions:\n  - name: a\n    http:\n      mode: row\n      url: http://h/\n      secrets:\n        k: {env: CLASSIFY_TOKEN}\n", 7, "secrets k: hosts is required"},
		{"secret as text", "functions:\n  - name: a\n    http:\n      mode: row\n      url: http://h/\n      secrets:\n        k: plain\n", 7, "give the secret as {env: NAME, hosts: [HOST]}"},
		{"secret header in row mode", "functions:\n  - name: a\n    http:\n      mode: row\n      url: http://h/\n      headers:\n        Authorization: {env: CLASSIFY_TOKEN}\n", 7, "a secret goes under secrets, with the hosts"},
		{"bad template", "functions:\n  - name: a\n    http:\n      mode: row\n      url: http://h/\n      body: '{{arg 0'\n", 6, "body"},
		{"unknown secret", "functions:\n  - name: a\n    http:\n      mode: row\n      url: http://h/\n      body: '{{secret \"nope\"}}'\n", 6, "nope"},
		{"bad rate", "functions:\n  - name: a\n    http:\n      mode: row\n      url: http://h/\n      rate: fast\n", 6, `rate: "fast" is not a positive number`},
		{"bad checkpoint", "functions:\n  - name: a\n    checkpoint: {rows: 0}\n    http: {mode: row, url: http://h/}\n", 3, "checkpoint rows"},
		{"bad header value", "functions:\n  - name: a\n    http:\n      url: http://h/\n      headers:\n        Authorization: {env: CLASSIFY_TOKEN, prefix: \"Bearer\\n\"}\n", 6, "headers Authorization: the value has a line break"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			path := write(t, c.text)
			_, err := funcfile.Load(path, env)
			var fe *funcfile.Error
			if !errors.As(err, &fe) {
				t.Fatalf("error %v, want a *funcfile.Error", err)
			}
			if fe.File != path || fe.Line != c.line || !strings.Contains(fe.Message, c.says) {
				t.Errorf("error %q (line %d), want line %d saying %q", err, fe.Line, c.line, c.says)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error %q shows the secret", err)
			}
		})
	}
}

// TestLoadMissingFile: a file that cannot be read says which and why.
func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	_, err := funcfile.Load(filepath.Join(t.TempDir(), "nope.yaml"), env)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "nope.yaml") {
		t.Errorf("error %v, want one naming the missing file", err)
	}
}

var yamlBreaks = strings.NewReplacer("\r\n", "\n", "\r", "\n", "\u0085", "\n", "\u2028", "\n", "\u2029", "\n")

// FuzzParse: no file makes the parser panic or hang; an error is an *Error with a line
// within the file.
func FuzzParse(f *testing.F) {
	f.Add([]byte("functions:\n  - name: a\n    http: {url: http://h/, timeout: 1m, headers: {A: {env: CLASSIFY_TOKEN}}}\n"))
	f.Add([]byte("functions:\n  - name: b\n    exec: {command: [sh], env: {K: v}}\n"))
	f.Add([]byte("functions: &a [*a]\n"))
	f.Add([]byte("functions:\n  - {name: x, exec: {command: [sh, -c, x], processes: 1_000}}\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := funcfile.Parse(data, filepath.Join(dir, "f.yaml"), env)
		if err == nil {
			if len(file.Functions) == 0 {
				t.Fatal("no error and no function")
			}
			return
		}
		var fe *funcfile.Error
		if !errors.As(err, &fe) {
			t.Fatalf("error %v is not a *funcfile.Error", err)
		}
		// Lines as YAML counts them: \r and the Unicode line breaks end lines too.
		lines := strings.Count(yamlBreaks.Replace(string(data)), "\n") + 1
		if fe.Line < 0 || fe.Line > lines {
			t.Fatalf("error %v names line %d of a %d-line file", err, fe.Line, lines)
		}
	})
}
