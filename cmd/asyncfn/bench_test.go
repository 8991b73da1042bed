package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func bench(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr strings.Builder
	err := runBench(context.Background(), args, func(string) string { return "" }, strings.NewReader(""), &stdout, &stderr)
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

func TestBenchDurationAlone(t *testing.T) {
	t.Parallel()
	if _, _, err := bench(t, "--duration", "1ns", "--rows", "5", echoURL(t)); err != nil {
		t.Fatal(err)
	}
}

func TestBenchUsageAndErrors(t *testing.T) {
	t.Parallel()
	_, stderr, err := bench(t)
	if err == nil || !strings.Contains(stderr, "usage: asyncfn bench [flags] URL") {
		t.Errorf("no URL: error %v, stderr\n%s", err, stderr)
	}
	for _, want := range []string{"-rows int", "(default 4096)", "-concurrency int", "(default 16)", "-batches int", "(default 256)", "-baseline", "-json"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("usage lacks %q:\n%s", want, stderr)
		}
	}
	for _, args := range [][]string{
		{"--batches", "0", "http://127.0.0.1:1/f"},
		{"--rows", "0", "http://127.0.0.1:1/f"},
		{"http://127.0.0.1:1/f", "extra"},
		{"--input", filepath.Join(t.TempDir(), "missing"), "http://127.0.0.1:1/f"},
	} {
		if _, _, err := bench(t, args...); err == nil {
			t.Errorf("bench %q succeeded", args)
		}
	}
}
