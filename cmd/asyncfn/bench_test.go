package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/asyncfn/asyncfn/caller"
	"github.com/asyncfn/asyncfn/cli"
)

// bench runs "asyncfn bench args..." through run, as the binary does.
func bench(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr strings.Builder
	err := run(context.Background(), append([]string{"bench"}, args...), func(string) string { return "" }, strings.NewReader(""), &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

func TestBenchJSONWithBaseline(t *testing.T) {
	t.Parallel()
	stdout, _, err := bench(t, "--baseline", "--json", "--batches", "3", "--rows", "10", "--concurrency", "2", echoURL(t))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(stdout, "\n") != 1 {
		t.Errorf("want one JSON line, got %q", stdout)
	}
	var got struct {
		URL           string  `json:"url"`
		Rows          int     `json:"rows"`
		Errors        int     `json:"errors"`
		RowsPerSecond float64 `json:"rows_per_second"`
		Ratio         float64 `json:"ratio"`
		Baseline      struct {
			URL  string `json:"url"`
			Rows int    `json:"rows"`
		} `json:"baseline"`
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatal(err)
	}
	if got.Rows != 30 || got.Errors != 0 || got.RowsPerSecond <= 0 || got.Ratio <= 0 || got.Baseline.Rows != 30 ||
		!strings.HasPrefix(got.Baseline.URL, "http://127.0.0.1:") || got.Baseline.URL == got.URL {
		t.Errorf("result %+v from %s", got, stdout)
	}
}

// TestBenchBaselineSeesOthers: a process busy beside the baseline (here a shell loop; in
// the case that hid it, a service whose idle claim loop spun) slows the baseline, so the
// ratio overstates the service: bench says how many cores others used and warns. Not
// parallel: the loop takes a core. Linux only, where /proc tells.
func TestBenchBaselineSeesOthers(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("other processes' CPU time is read from /proc")
	}
	hog := exec.Command("sh", "-c", "while :; do :; done")
	if err := hog.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hog.Process.Kill(); hog.Wait() })
	stdout, _, err := bench(t, "--baseline", "--duration", "700ms", "--rows", "10", "--concurrency", "2", echoURL(t))
	if err != nil {
		t.Fatal(err)
	}
	var cores float64
	if _, err := fmt.Sscanf(stdout[strings.Index(stdout, "others")+len("others"):], "%f cores", &cores); err != nil || cores < 0.3 {
		t.Errorf("others: %v cores (%v) beside a busy loop; want at least 0.3 in\n%s", cores, err, stdout)
	}
	if !strings.Contains(stdout, "warning       the baseline shared the CPU") {
		t.Errorf("no warning beside a busy loop in\n%s", stdout)
	}
}

func TestBenchTextWithInput(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "rows.jsonl")
	if err := os.WriteFile(file, []byte("{\"text\":\"a\"}\n{\"text\":\"b\"}\n{\"text\":\"c\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, _, err := bench(t, "--baseline", "--input", file, "--rows", "2", "--batches", "4", echoURL(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"baseline (in-process synchronous echo, run first)", "service\n", "rows          6 in", "4 (", "ratio         "} {
		if !strings.Contains(stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, stdout)
		}
	}
}

// TestBenchFlagsAfterURL checks that flags after the URL are flags, as for call.
func TestBenchFlagsAfterURL(t *testing.T) {
	t.Parallel()
	stdout, stderr, err := bench(t, echoURL(t), "--json", "--batches", "3", "--rows", "10", "--concurrency", "2")
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stderr)
	}
	var got struct{ Rows, Batches int }
	if err := json.Unmarshal([]byte(stdout), &got); err != nil || got.Rows != 30 || got.Batches != 3 {
		t.Errorf("bench printed %q (%v), want 3 batches of 10 rows as JSON", stdout, err)
	}
}

// TestBenchRefusedFailsFast checks that bench of a port where nothing listens ends at
// once with the refusal, instead of counting refused batches for minutes.
func TestBenchRefusedFailsFast(t *testing.T) {
	t.Parallel()
	stdout, _, err := bench(t, "--batches", "1000", "--rows", "10", refusedURL(t))
	if !errors.Is(err, caller.ErrRefused) || !strings.Contains(err.Error(), "--wait-for-service") || stdout != "" {
		t.Errorf("error %v, stdout %q; want the refusal with the hint, and no report", err, stdout)
	}
}

func TestBenchDurationAlone(t *testing.T) {
	t.Parallel()
	if _, _, err := bench(t, "--duration", "1ns", "--rows", "5", echoURL(t)); err != nil {
		t.Fatal(err)
	}
}

func TestBenchUsageAndErrors(t *testing.T) {
	t.Parallel()
	_, stderr, err := bench(t, "-h")
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: error %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{
		"Usage: asyncfn bench [flags] URL\n\nLoads the external-function service",
		"\n  --rows\n        rows per batch (default 4096)\n",
		"\n  --concurrency\n        batches in flight at once (default 16)\n",
		"\n  --duration\n        stop starting batches after this long (0: no limit); without --batches, run for this long (default 0s)\n",
		"\n  --baseline\n        first run the same load",
		"(default false)\n",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("help lacks %q:\n%s", want, stderr)
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "give exactly one service URL: asyncfn bench [flags] URL"},
		{[]string{"http://127.0.0.1:1/f", "extra"}, "give exactly one service URL: asyncfn bench [flags] URL"},
		{[]string{"http://127.0.0.1:1/f", "--duration", "10"}, "--duration 10: a duration needs a unit, such as 10s"},
		{[]string{"http://127.0.0.1:1/f", "--rows", "many"}, "--rows many: parse error"},
	} {
		_, stderr, err := bench(t, tt.args...)
		var usage *cli.UsageError
		if !errors.As(err, &usage) || err.Error() != tt.want || stderr != "" {
			t.Errorf("bench %q: error %v, want a usage error %q; stderr %q", tt.args, err, tt.want, stderr)
		}
	}
	for _, args := range [][]string{
		{"--batches", "0", "http://127.0.0.1:1/f"},
		{"--rows", "0", "http://127.0.0.1:1/f"},
		{"--input", filepath.Join(t.TempDir(), "missing"), "http://127.0.0.1:1/f"},
	} {
		if _, _, err := bench(t, args...); err == nil {
			t.Errorf("bench %q succeeded", args)
		}
	}
}
