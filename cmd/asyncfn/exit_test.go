package main

import (
	"debug/buildinfo"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// binary builds asyncfn once for the tests that need its exit status, recording the
// commit as go build does in a git checkout (-buildvcs=auto: GOFLAGS may turn it off).
func binary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := exec.Command("mktemp", "-d").Output()
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(strings.TrimSpace(string(dir)), "asyncfn")
		out, err := exec.Command("go", "build", "-buildvcs=auto", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = errors.New(string(out))
		}
	})
	if binErr != nil {
		t.Fatalf("go build ./cmd/asyncfn: %v", binErr)
	}
	return binPath
}

// runBinary runs the asyncfn binary and returns its output and exit status.
func runBinary(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"PATH=/usr/bin:/bin"} // no ASYNCFN_* from the caller
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// TestExitStatus (issue 16, points 7, 8 and 10): the binary's exit status and message for
// help (0), usage errors (2, one prefixed line) and failures (1, one prefix), and its list
// of every command, client commands included, for an unknown one.
func TestExitStatus(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"serve", "--help"}, {"worker", "--help"}, {"migrate", "-h"}, {"--help"}, {"help"}} {
		stdout, stderr, code := runBinary(t, args...)
		if code != 0 || !strings.Contains(stdout+stderr, "Usage: asyncfn") {
			t.Errorf("asyncfn %v: exit %d, want 0 with the usage; stderr:\n%s", args, code, stderr)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--sync-wait", "5"}, "asyncfn: --sync-wait 5: a duration needs a unit, such as 5s\n"},
		{[]string{"worker", "--bogus"}, "asyncfn: unknown flag --bogus (asyncfn worker --help lists them)\n"},
		{[]string{"migrate", "--store", "memroy"}, "asyncfn: --store memroy is not a store"},
	} {
		_, stderr, code := runBinary(t, tc.args...)
		if code != 2 || !strings.HasPrefix(stderr, tc.want) {
			t.Errorf("asyncfn %v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
	_, stderr, code := runBinary(t, "sevre")
	if code != 2 || !strings.HasPrefix(stderr, `asyncfn: unknown command "sevre" (did you mean serve?)`) {
		t.Errorf("asyncfn sevre: exit %d, stderr %q", code, stderr)
	}
	for _, c := range []string{"serve", "worker", "migrate", "dynamodb", "version", "call", "bench"} {
		if !strings.Contains(stderr, "\n  "+c+" ") {
			t.Errorf("asyncfn sevre does not list %s:\n%s", c, stderr)
		}
	}
	_, stderr, code = runBinary(t, "migrate", "--store", "postgres://asyncfn@127.0.0.1:1/app")
	if code != 1 || !strings.HasPrefix(stderr, "asyncfn: --store postgres://asyncfn@127.0.0.1:1/app: store unavailable: ") {
		t.Errorf("migrate on a closed port: exit %d, stderr %q; want 1 and one prefix", code, stderr)
	}
}

// TestVersion (point 7): asyncfn --version and asyncfn version print the module's path and
// version and the commit the binary was built from.
func TestVersion(t *testing.T) {
	t.Parallel()
	info, err := buildinfo.ReadFile(binary(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{info.Main.Path + " " + info.Main.Version, info.GoVersion}
	commit := "commit unknown"
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			commit = "commit " + s.Value
		}
	}
	want = append(want, commit)
	for _, arg := range []string{"--version", "version"} {
		stdout, stderr, code := runBinary(t, arg)
		if code != 0 {
			t.Errorf("asyncfn %s: exit %d: %s", arg, code, stderr)
		}
		for _, w := range want {
			if !strings.Contains(stdout, w) {
				t.Errorf("asyncfn %s printed %q, which lacks %q", arg, stdout, w)
			}
		}
	}
	t.Logf("asyncfn --version: %s", commit)
}
