package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/asyncfn/asyncfn/caller"
	"github.com/asyncfn/asyncfn/cli"
)

// echoURL serves caller.BaselineHandler for the test and returns its URL ending in /echo.
func echoURL(t *testing.T) string {
	t.Helper()
	server := httptest.NewServer(caller.BaselineHandler())
	t.Cleanup(server.Close)
	return server.URL + "/echo"
}

// call runs "asyncfn call args..." through run, as the binary does, with stdin and
// returns stdout, stderr and the error.
func call(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr strings.Builder
	err := run(context.Background(), append([]string{"call"}, args...), func(string) string { return "" }, strings.NewReader(stdin), &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

func TestCallArgs(t *testing.T) {
	t.Parallel()
	stdout, stderr, err := call(t, "", echoURL(t), "hello", "wörld")
	if err != nil {
		t.Fatal(err)
	}
	want := `+-----+----------+
| Row | ECHO($1) |
|-----+----------|
|   1 | "hello"  |
|   2 | "wörld"  |
+-----+----------+
`
	if stdout != want || stderr != "" {
		t.Errorf("stdout\n%s\nwant\n%s\nstderr %q", stdout, want, stderr)
	}
}

func TestCallCSVFile(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "reviews.csv")
	if err := os.WriteFile(file, []byte("id,text\n1,great\n2,\"bad, really\"\n3,ok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, _, err := call(t, "", "--input", file, "--columns", "text", "--output", "csv",
		"--max-batch-rows", "2", "--concurrency", "2", echoURL(t))
	if err != nil {
		t.Fatal(err)
	}
	want := "text,ECHO(text)\ngreat,great\n\"bad, really\",\"bad, really\"\nok,ok\n"
	if stdout != want {
		t.Errorf("stdout\n%s\nwant\n%s", stdout, want)
	}
}

func TestCallStdinJSONLines(t *testing.T) {
	t.Parallel()
	stdout, _, err := call(t, "one\ntwo\n", "--output", "json", "--compression", "deflate", echoURL(t))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"row":1,"input":["one"],"value":"one"}` + "\n" + `{"row":2,"input":["two"],"value":"two"}` + "\n"
	if stdout != want {
		t.Errorf("stdout\n%s\nwant\n%s", stdout, want)
	}
}

func TestCallJSONLinesFromStdinWithFormat(t *testing.T) {
	t.Parallel()
	stdout, _, err := call(t, `{"n":12345678901234567890.5,"s":"x"}`+"\n", "--format", "jsonl", "--columns", "n", "--output", "csv", echoURL(t))
	if err != nil {
		t.Fatal(err)
	}
	if want := "n,ECHO(n)\n12345678901234567890.5,12345678901234567890.5\n"; stdout != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
}

// TestCallJSONLinesUnknownKey checks that a --columns key in no line of the first batch
// fails the call, as an unknown CSV column does, instead of sending NULL for every row.
func TestCallJSONLinesUnknownKey(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "r.jsonl")
	if err := os.WriteFile(file, []byte(`{"id":1,"review":"good"}`+"\n"+`{"id":2,"review":"bad"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, _, err := call(t, "", "--input", file, "--columns", "text", echoURL(t))
	if want := file + `: column "text": the input's columns are id, review`; err == nil || err.Error() != want || stdout != "" {
		t.Errorf("error %v, stdout %q; want %s and no output", err, stdout, want)
	}
}

// refusedURL returns a loopback URL on which connections are refused, as on a typo'd port.
func refusedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	return "http://" + ln.Addr().String() + "/sentiment"
}

// TestCallRefusedFailsFast checks that a call to a port where nothing listens fails at
// once, saying how to wait, instead of retrying silently for the retry budget (--timeout
// only bounds the test should it retry).
func TestCallRefusedFailsFast(t *testing.T) {
	t.Parallel()
	stdout, stderr, err := call(t, "", "--timeout", "1m", refusedURL(t), "hi")
	if err == nil || !errors.Is(err, caller.ErrRefused) || stdout != "" || stderr != "" ||
		!strings.Contains(err.Error(), "Remote service cannot be reached") || !strings.Contains(err.Error(), "connection refused") ||
		!strings.HasSuffix(err.Error(), "(refused before the service answered anything, so not retried: is the URL right? --wait-for-service waits for a service that is starting)") {
		t.Errorf("error %v, stdout %q, stderr %q; want a refusal at once, with the hint", err, stdout, stderr)
	}
}

// TestCallRetryNotice checks that the first retry for each reason is told on standard
// error, with what is retried, why and for how long: a refused connection with
// --wait-for-service, and a 503 before an answer.
func TestCallRetryNotice(t *testing.T) {
	t.Parallel()
	url := refusedURL(t)
	_, stderr, err := call(t, "", "--wait-for-service", "--retry-budget", "300ms", url, "hi")
	want := "asyncfn: POST " + url + ": connection refused, retrying for up to 300ms; --retry-budget to change\n"
	if !errors.Is(err, caller.ErrUnreachable) || errors.Is(err, caller.ErrRefused) || stderr != want {
		t.Errorf("error %v, stderr %q; want ErrUnreachable after retries, and stderr %q", err, stderr, want)
	}

	var mu sync.Mutex
	unavailable := 2
	baseline := caller.BaselineHandler()
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if unavailable > 0 {
			unavailable--
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		baseline.ServeHTTP(w, r)
	}))
	defer server.Close()
	stdout, stderr, err := call(t, "", "--output", "csv", server.URL+"/echo", "hi")
	want = "asyncfn: POST " + server.URL + "/echo: 503 Service Unavailable, retrying for up to 5m0s; --retry-budget to change\n"
	if err != nil || stdout != "$1,ECHO($1)\nhi,hi\n" || stderr != want {
		t.Errorf("error %v, stdout %q, stderr %q; want the row, and stderr %q", err, stdout, stderr, want)
	}
}

// sumService is a service written independently of asyncfn, as the public Node
// sample's /test/sum is: it answers at once with its two arguments added by JavaScript's
// +, which adds numbers but concatenates anything else, so it sees what was sent.
func sumService(t *testing.T) string {
	t.Helper()
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Data [][]any }
		dec := json.NewDecoder(r.Body)
		dec.UseNumber()
		if err := dec.Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		out := make([][]any, len(body.Data))
		for i, row := range body.Data {
			if len(row) != 3 {
				http.Error(w, "sum takes two arguments", http.StatusBadRequest)
				return
			}
			x, xNumber := row[1].(json.Number)
			y, yNumber := row[2].(json.Number)
			if xNumber && yNumber {
				fx, _ := x.Float64()
				fy, _ := y.Float64()
				out[i] = []any{row[0], fx + fy}
			} else {
				out[i] = []any{row[0], fmt.Sprint(row[1]) + fmt.Sprint(row[2])}
			}
		}
		json.NewEncoder(w).Encode(map[string]any{"data": out})
	}))
	t.Cleanup(server.Close)
	return server.URL + "/test/sum"
}

// TestCallTypedArguments checks that --signature and --types send CSV fields as their
// SQL type's JSON, as Snowflake does, so that a service summing numbers answers 1,2
// with 3, not "12"; and that a field not of its type fails naming its line and column.
func TestCallTypedArguments(t *testing.T) {
	t.Parallel()
	url := sumService(t)
	file := filepath.Join(t.TempDir(), "sums.csv")
	if err := os.WriteFile(file, []byte("a,b\n1,2\n10,-2.5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	want := `{"row":1,"input":[1,2],"value":3}` + "\n" + `{"row":2,"input":[10,-2.5],"value":7.5}` + "\n"
	for _, typing := range [][]string{{"--signature", "(A NUMBER, B NUMBER)"}, {"--types", "number,float"}} {
		stdout, stderr, err := call(t, "", append(typing, "--input", file, "--output", "json", url)...)
		if err != nil || stdout != want {
			t.Errorf("%q: %v %s\nstdout\n%s\nwant\n%s", typing, err, stderr, stdout, want)
		}
	}
	stdout, _, err := call(t, "", "--types", "number", "--output", "json", "--", echoURL(t), "-1", "2.50")
	if err != nil || stdout != `{"row":1,"input":[-1],"value":-1}`+"\n"+`{"row":2,"input":[2.50],"value":2.50}`+"\n" {
		t.Errorf("typed ARGs: %v, stdout %q", err, stdout)
	}

	if err := os.WriteFile(file, []byte("a,b\n1,2\n3,x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = call(t, "", "--types", "NUMBER,NUMBER", "--input", file, url)
	if want := `reading row 2: line 3, column "b": "x" is not a number (NUMBER)`; err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--types", "NUMBER", "--signature", "(A NUMBER)", url, "1"}, "give --signature or --types, not both: --types only shortens the signature"},
		{[]string{"--types", "NUMBR", url, "1"}, `--types: "NUMBR" is not a Snowflake data type such as NUMBER, FLOAT, BOOLEAN, VARCHAR, VARIANT, OBJECT, ARRAY, DATE or TIMESTAMP`},
		{[]string{"--signature", "(A NUMBER, B NUMBER)", url, "1"}, "2 argument types, but each ARG is a row of one argument: give rows of several columns with --input"},
	} {
		var usage *cli.UsageError
		if _, _, err := call(t, "", tt.args...); !errors.As(err, &usage) || err.Error() != tt.want {
			t.Errorf("call %q: error %v, want usage error %s", tt.args, err, tt.want)
		}
	}
}

// TestCallHeaders checks that the flags reach the service as Snowflake's headers.
func TestCallHeaders(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got http.Header
	baseline := caller.BaselineHandler()
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Clone()
		mu.Unlock()
		baseline.ServeHTTP(w, r)
	}))
	defer server.Close()
	_, _, err := call(t, "row\n", "--name", "MY_FN", "--return-type", "VARCHAR", "--query-id", "q-1",
		"--header", "team=data", "--header", "env=test", "--context", "current_role=ANALYST",
		"--compression", "gzip", "--input", "-", server.URL+"/whatever")
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for name, want := range map[string]string{
		"Sf-External-Function-Name":             "MY_FN",
		"Sf-External-Function-Signature":        "(ARG1 VARCHAR)",
		"Sf-External-Function-Return-Type":      "VARCHAR",
		"Sf-External-Function-Current-Query-Id": "q-1",
		"Sf-External-Function-Query-Batch-Id":   "q-1:1:1:0:0",
		"Sf-Custom-Team":                        "data",
		"Sf-Custom-Env":                         "test",
		"Sf-Context-Current_role":               "ANALYST",
		"Content-Encoding":                      "gzip",
	} {
		if got.Get(name) != want {
			t.Errorf("%s: %q, want %q", name, got.Get(name), want)
		}
	}
}

// TestCallFailure checks that a failed batch makes an error naming it, and no output.
func TestCallFailure(t *testing.T) {
	t.Parallel()
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Error(w, "the text is empty.", http.StatusBadRequest)
	}))
	defer server.Close()
	stdout, _, err := call(t, "", "--query-id", "q-9", server.URL+"/sentiment", "a", "")
	want := "rows 1 to 2: batch q-9:1:1:0:0: Request failed for external function SENTIMENT with remote service error: 400 'the text is empty.'"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant %s", err, want)
	}
	if stdout != "" {
		t.Errorf("stdout %q, want nothing", stdout)
	}
}

func TestCallStats(t *testing.T) {
	t.Parallel()
	_, stderr, err := call(t, "", "--stats", echoURL(t), "x")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"batches       1 ", "1 POST, 0 GET", "p50", "  batch "} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stats\n%s\nlack %q", stderr, want)
		}
	}
}

// TestCallFlagsAfterURL checks that flags are flags wherever they are before a "--",
// and that every word after it is a row, "--output" included.
func TestCallFlagsAfterURL(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "f.csv")
	if err := os.WriteFile(file, []byte("id,text\n1,great\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := echoURL(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{url, "--input", file, "--columns", "text", "--output", "csv"}, "text,ECHO(text)\ngreat,great\n"},
		{[]string{url, "hi", "--output", "csv"}, "$1,ECHO($1)\nhi,hi\n"},
		{[]string{"--output=csv", url, "hi", "--stats=false", "there"}, "$1,ECHO($1)\nhi,hi\nthere,there\n"},
		{[]string{url, "--output", "csv", "--", "--output", "-x", "--"}, "$1,ECHO($1)\n--output,--output\n-x,-x\n--,--\n"},
	} {
		stdout, stderr, err := call(t, "", tt.args...)
		if err != nil || stdout != tt.want {
			t.Errorf("call %q: %v %s\nstdout\n%s\nwant\n%s", tt.args, err, stderr, stdout, tt.want)
		}
	}
}

// TestCallHelpAndUsageErrors checks the help, listed as the server commands list their
// flags, and that every mistake on the command line is one line naming the flag, of a
// type main exits 2 for.
func TestCallHelpAndUsageErrors(t *testing.T) {
	t.Parallel()
	_, stderr, err := call(t, "", "--help")
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: error %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{
		"Usage: asyncfn call [flags] URL [ARG...]\n\nCalls the external-function service at URL",
		"\n  --max-batch-rows\n        most rows per batch, as the function's MAX_BATCH_ROWS (default 4096)\n",
		"\n  --timeout\n        most time for one batch, polls included (default 10m0s)\n",
		"\n  --compression\n        request body compression, as COMPRESSION: none, gzip or deflate (default none)\n",
		"\n  --input\n        read rows from this file (- or empty: standard input) (default \"\")\n",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("help lacks %q:\n%s", want, stderr)
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "the service URL is missing: asyncfn call [flags] URL [ARG...]"},
		{[]string{"--timeout", "5", "http://127.0.0.1:1/f", "x"}, "--timeout 5: a duration needs a unit, such as 5s"},
		{[]string{"http://127.0.0.1:1/f", "x", "--retry-budget=2.5"}, "--retry-budget 2.5: a duration needs a unit, such as 2.5s"},
		{[]string{"--timeout", "soon", "http://127.0.0.1:1/f", "x"}, "--timeout soon: not a duration, such as 300ms, 5s or 2m"},
		{[]string{"http://127.0.0.1:1/f", "-x"}, "unknown flag --x (asyncfn call --help lists them; put a row that starts with - after --)"},
		{[]string{"http://127.0.0.1:1/f", "x", "--output"}, "--output needs a value"},
		{[]string{"--output", "xml", "http://127.0.0.1:1/f", "x"}, `--output: output format "xml": use table, csv or json`},
		{[]string{"--input", "x.csv", "http://127.0.0.1:1/f", "arg"}, "give rows as arguments or with --input, --format and --columns, not both"},
		{[]string{"not a url", "arg"}, `"not a url" is not an http or https URL`},
		{[]string{"--compression", "br", "http://127.0.0.1:1/f", "x"}, `compression "br": use none, gzip or deflate`},
	} {
		stdout, stderr, err := call(t, "", tt.args...)
		var usage *cli.UsageError
		if !errors.As(err, &usage) || err.Error() != tt.want || stdout != "" || stderr != "" {
			t.Errorf("call %q: error %#v, want a usage error %q; stdout %q, stderr %q", tt.args, err, tt.want, stdout, stderr)
		}
	}
}

func TestCallUsageAndErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--input", "x.csv", "http://127.0.0.1:1/f", "arg"},
		{"--output", "xml", "http://127.0.0.1:1/f", "arg"},
		{"--format", "xml", "http://127.0.0.1:1/f"},
		{"--compression", "br", "http://127.0.0.1:1/f", "arg"},
		{"--concurrency", "0", "http://127.0.0.1:1/f", "arg"},
		{"--header", "novalue", "http://127.0.0.1:1/f", "arg"},
		{"--input", filepath.Join(t.TempDir(), "missing.csv"), "http://127.0.0.1:1/f"},
		{"not a url", "arg"},
	} {
		if _, _, err := call(t, "", args...); err == nil {
			t.Errorf("call %q succeeded", args)
		}
	}
}
