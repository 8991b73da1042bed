package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// serve runs "asyncfn serve args..." through run on port 0 with a store in a temporary
// directory, as the binary would, and returns its base URL; the server stops at cleanup.
func serve(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, w := io.Pipe()
	done := make(chan error, 1)
	args = append([]string{"serve", "--addr", "127.0.0.1:0", "--store", filepath.Join(t.TempDir(), "asyncfn.db"), "--log-level", "warn"}, args...)
	go func() {
		done <- run(ctx, args, func(string) string { return "" }, strings.NewReader(""), w, io.Discard)
		w.Close()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		cancel()
		t.Fatalf("serve printed no address: %v", <-done)
	}
	go io.Copy(io.Discard, stdout)
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve returned %v", err)
		}
	})
	url := line[strings.Index(line, "http://"):]
	return url[:strings.IndexByte(url, ' ')]
}

// TestCallSentimentSample reproduces the original AWS sample's call and output against
// the real service: select ext_func_async(a) from test_tb over ('hello world'),
// ('I am happy').
func TestCallSentimentSample(t *testing.T) {
	t.Parallel()
	for _, wait := range []string{"1s", "0"} { // answered on the POST, and by polling
		base := serve(t, "--sync-wait", wait, "--poll-wait", wait)
		stdout, stderr, err := call(t, "", base+"/sentiment", "hello world", "I am happy")
		if err != nil {
			t.Fatalf("call: %v\n%s", err, stderr)
		}
		want := `+-----+------------------------------------------------------------------------------------------+
| Row | SENTIMENT($1)                                                                            |
|-----+------------------------------------------------------------------------------------------|
|   1 | {"Sentiment":"NEUTRAL","Positive":0,"Negative":0,"Neutral":1,"Mixed":0}                  |
|   2 | {"Sentiment":"POSITIVE","Positive":0.8497369,"Negative":0,"Neutral":0.1502631,"Mixed":0} |
+-----+------------------------------------------------------------------------------------------+
`
		if stdout != want {
			t.Errorf("sync-wait %s: stdout\n%s\nwant\n%s", wait, stdout, want)
		}
	}
}

// TestCallManyBatches sends a file of rows in several batches, some concurrently, to the
// real service and checks every row comes back in input order; and a row the function
// rejects fails the call with the service's sentence, as Snowflake would show it.
func TestCallManyBatches(t *testing.T) {
	t.Parallel()
	base := serve(t)
	input := filepath.Join(t.TempDir(), "texts.csv")
	var sb strings.Builder
	sb.WriteString("id,text\n")
	for i := range 1000 {
		sb.WriteString(strings.Repeat("x", i%7) + "," + []string{"good", "bad", "fine"}[i%3] + "\n")
	}
	if err := os.WriteFile(input, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := call(t, "", "--input", input, "--columns", "text", "--max-batch-rows", "64", "--concurrency", "4", "--output", "json", base+"/vader")
	if err != nil {
		t.Fatalf("call: %v\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 1000 {
		t.Fatalf("%d output lines, want 1000", len(lines))
	}
	for i, line := range lines {
		var row struct {
			Row   int
			Input []string
			Value struct{ Compound float64 }
		}
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatal(err)
		}
		want := []string{"good", "bad", "fine"}[i%3]
		if row.Row != i+1 || len(row.Input) != 1 || row.Input[0] != want {
			t.Fatalf("line %d = %s, want row %d of %q", i, line, i+1, want)
		}
		if (want == "bad") != (row.Value.Compound < 0) {
			t.Fatalf("line %d: %q scored %v", i, want, row.Value.Compound)
		}
	}

	_, _, err = call(t, `{"text":{"not":"a string"}}`+"\n", "--format", "jsonl", base+"/sentiment")
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "sentiment takes a string, but row 0 has an object") {
		t.Fatalf("call with an object = %v, want the service's 400 sentence", err)
	}
}

// TestBenchAgainstService runs the load generator against the real service, with the
// in-process baseline, and checks the machine-readable report.
func TestBenchAgainstService(t *testing.T) {
	t.Parallel()
	base := serve(t)
	var stdout, stderr strings.Builder
	err := runBench(context.Background(), []string{"--rows", "100", "--batches", "8", "--concurrency", "4", "--baseline", "--json", base + "/echo"},
		func(string) string { return "" }, strings.NewReader(""), &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr.String())
	}
	var report struct {
		Batches, Errors int
		Rows            int64
		Baseline        struct{ Rows int64 }
		Ratio           float64
	}
	if err := json.Unmarshal([]byte(stdout.String()), &report); err != nil {
		t.Fatalf("bench --json printed %q: %v", stdout.String(), err)
	}
	if report.Batches != 8 || report.Errors != 0 || report.Rows != 800 || report.Baseline.Rows != 800 || report.Ratio <= 0 {
		t.Fatalf("bench report %s", stdout.String())
	}
}
