package main

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestHelpAndUsageExit (issue 16, point 8): the example's binary exits 0 on --help, with
// the usage and no "flag: help requested", and 2 on a usage error, with one line.
func TestHelpAndUsageExit(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "wordcount")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := func(args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"PATH=/usr/bin:/bin"}
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return string(out), exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	if out, code := run("serve", "--help"); code != 0 || !strings.Contains(out, "Usage: asyncfn serve") || strings.Contains(out, "help requested") {
		t.Errorf("wordcount serve --help: exit %d:\n%s", code, out)
	}
	if out, code := run("serve", "--sync-wait", "5"); code != 2 || out != "wordcount: --sync-wait 5: a duration needs a unit, such as 5s\n" {
		t.Errorf("wordcount serve --sync-wait 5: exit %d, %q", code, out)
	}
}
