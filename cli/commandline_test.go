package cli_test

import (
	"context"
	"errors"
	"flag"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/cli"
	"github.com/asyncfn/asyncfn/internal/syncbuf"
	"github.com/asyncfn/asyncfn/postgres/pgtest"
)

// runOutput runs cli.Main until it returns, or until it has printed its first stdout
// line (then it is stopped), and returns everything it printed and its error.
func runOutput(t *testing.T, args []string, env map[string]string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncbuf.Buffer
	done := make(chan error, 1)
	go func() {
		done <- cli.Main(ctx, args, func(k string) string { return env[k] }, &out, &errOut, cli.Options{Functions: []asyncfn.Function{echoFn}})
	}()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case err := <-done:
			return out.String(), errOut.String(), err
		case <-deadline:
			t.Fatalf("%v neither started nor failed in 30s", args)
		case <-time.After(10 * time.Millisecond):
		}
		if strings.Contains(out.String(), "\n") {
			cancel()
			err := <-done
			return out.String(), errOut.String(), err
		}
	}
}

// isUsage reports whether err is a usage error (exit status 2).
func isUsage(err error) bool {
	var u *cli.UsageError
	return errors.As(err, &u)
}

// TestStoreBareWord (issue 16, point 4): a --store that is a bare word, neither a known
// kind nor a path, is refused with the list of forms instead of becoming a SQLite file.
func TestStoreBareWord(t *testing.T) {
	t.Parallel()
	for _, spec := range []string{"memroy", "Memory", "sqlite", "postgres"} {
		_, _, err := runOutput(t, []string{"migrate", "--store", spec}, nil)
		if !isUsage(err) || !strings.Contains(err.Error(), "--store "+spec+" is not a store") {
			t.Errorf("--store %s: %v, want a usage error naming it", spec, err)
			continue
		}
		for _, form := range []string{"memory", "PATH.db", "sqlite:PATH", "postgres://", "dynamodb://"} {
			if !strings.Contains(err.Error(), form) {
				t.Errorf("--store %s: %q does not list %s", spec, err, form)
			}
		}
		if _, statErr := os.Stat(spec); statErr == nil {
			t.Errorf("--store %s created a file", spec)
		}
	}
	if _, _, err := runOutput(t, []string{"migrate", "--store", "memroy"}, nil); !strings.Contains(err.Error(), "did you mean memory?") {
		t.Errorf("--store memroy: %v, want it to suggest memory", err)
	}
	for _, spec := range []string{"redis://localhost", "host=db password=x dbname=app"} {
		if _, _, err := runOutput(t, []string{"migrate", "--store", spec}, nil); !isUsage(err) {
			t.Errorf("--store %s: %v, want a usage error", spec, err)
		}
	}
	dir := t.TempDir()
	for _, spec := range []string{filepath.Join(dir, "plain"), filepath.Join(dir, "a.db"), "sqlite:" + filepath.Join(dir, "memroy"), "memory"} {
		if _, _, err := runOutput(t, []string{"migrate", "--store", spec}, nil); err != nil {
			t.Errorf("--store %s: %v, want the store ready", spec, err)
		}
	}
}

// TestSecretsNeverPrinted (point 5): a password in the store's DSN, as user information or
// as a parameter, appears in no output of migrate, serve and worker, whether they work or
// fail, at the debug log level.
func TestSecretsNeverPrinted(t *testing.T) {
	t.Parallel()
	const secret = "S3cretPw-16"
	withPassword := func(dsn string) string {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(u.User.Username(), secret)
		return u.String()
	}
	check := func(args []string, wantErr bool) {
		t.Helper()
		args = append(args, "--log-level", "debug", "--log-format", "json")
		stdout, stderr, err := runOutput(t, args, nil)
		if (err != nil) != wantErr {
			t.Errorf("%v: %v, want an error: %v", args[:1], err, wantErr)
		}
		for what, out := range map[string]string{"stdout": stdout, "stderr": stderr, "the error": errString(err)} {
			if strings.Contains(out, secret) {
				t.Errorf("%s: %s shows the password:\n%s", args[0], what, out)
			}
		}
		if err != nil && !strings.Contains(err.Error(), "xxxxx") && !isUsage(err) {
			t.Errorf("%s: %v does not show where the password was", args[0], err)
		}
	}
	// Failures, without a database: refused connections, bad parameters.
	check([]string{"migrate", "--store", "postgres://asyncfn:" + secret + "@127.0.0.1:1/app?connect_timeout=5"}, true)
	check([]string{"serve", "--addr", "127.0.0.1:0", "--store", "postgres://asyncfn@127.0.0.1:1/app?password=" + secret}, true)
	check([]string{"worker", "--store", "postgres://asyncfn:" + secret + "@127.0.0.1:1/app?sslmode=bogus"}, true)
	check([]string{"migrate", "--store", "dynamodb://AKID:" + secret + "@table?region=us-east-1&bogus=1"}, true)
	if os.Getenv(pgtest.EnvDSN) == "" {
		return // the successful runs need the database; the message of the skip is pgtest's
	}
	dsn, _ := freshSchema(t)
	dsn = withPassword(dsn) // the test server trusts local connections: any password does
	check([]string{"migrate", "--store", dsn}, false)
	check([]string{"serve", "--addr", "127.0.0.1:0", "--store", dsn}, false)
	check([]string{"worker", "--store", dsn, "--addr", "127.0.0.1:0"}, false)
	check([]string{"serve", "--addr", "127.0.0.1:0", "--store", pgtest.Param(dsn, "password", secret)}, false)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestListenBeforeStore (point 10): an address in use fails, naming the flag and the
// address as typed, before the store file is created.
func TestListenBeforeStore(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"serve", "--addr", addr}, "--addr"},
		{[]string{"serve", "--addr", "127.0.0.1:0", "--metrics-addr", addr}, "--metrics-addr"},
		{[]string{"worker", "--addr", addr}, "--addr"},
		{[]string{"worker", "--metrics-addr", addr}, "--metrics-addr"},
	} {
		store := filepath.Join(t.TempDir(), "a.db")
		_, _, err := runOutput(t, append(tc.args, "--store", store), nil)
		if err == nil || !strings.HasPrefix(err.Error(), tc.flag+" "+addr+": ") {
			t.Errorf("%v on a busy port: %v, want an error starting with %s %s", tc.args, err, tc.flag, addr)
		}
		if _, statErr := os.Stat(store); !errors.Is(statErr, os.ErrNotExist) {
			t.Errorf("%v on a busy port created the store file (%v)", tc.args, statErr)
		}
	}
}

// TestAddressAsTyped (point 9): the refusal of an exposed address without a key quotes
// the address as typed (":0", not "[::]:0") and says how to listen on loopback.
func TestAddressAsTyped(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"worker", "--metrics-addr", ":0"},
		{"serve", "--addr", ":0"},
		{"serve", "--addr", "127.0.0.1:0", "--metrics-addr", ":0"},
	} {
		_, _, err := runOutput(t, append(args, "--store", "memory"), nil)
		if err == nil || !strings.Contains(err.Error(), args[len(args)-2]+" :0 is reachable from other machines") || !strings.Contains(err.Error(), "127.0.0.1") {
			t.Errorf("%v: %v, want the refusal to quote :0 and name 127.0.0.1", args, err)
		}
	}
	if _, _, err := runOutput(t, []string{"worker", "--metrics-addr", "127.0.0.1:0", "--store", "memory"}, nil); err != nil {
		t.Errorf("worker --metrics-addr 127.0.0.1:0: %v", err)
	}
}

// TestUsageErrors (points 8 and 10): help is flag.ErrHelp for every command and goes to
// stderr in one style; a command line that cannot run is a *cli.UsageError of one line,
// in --flag form, saying what is wrong (a duration needs a unit); banners count right.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"serve", "--help"}, {"worker", "-h"}, {"migrate", "--help"}, {"dynamodb", "create-table", "--help"}, {"dynamodb", "--help"}} {
		_, stderr, err := runOutput(t, args, nil)
		if !errors.Is(err, flag.ErrHelp) || !strings.HasPrefix(stderr, "Usage: asyncfn ") {
			t.Errorf("%v: %v, want flag.ErrHelp and the usage on stderr:\n%s", args, err, stderr)
		}
		if args[0] != "dynamodb" || len(args) == 3 {
			if !strings.Contains(stderr, "\n  --store\n        ") || !strings.Contains(stderr, "env ASYNCFN_STORE)") {
				t.Errorf("%v: the flags are not listed as --flag with default and variable:\n%s", args, stderr)
			}
		}
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--sync-wait", "5"}, nil, "--sync-wait 5: a duration needs a unit, such as 5s"},
		{[]string{"--lease", "soon"}, nil, "--lease soon: not a duration"},
		{nil, map[string]string{"ASYNCFN_POLL_WAIT": "10"}, "ASYNCFN_POLL_WAIT=10: a duration needs a unit, such as 10s"},
		{[]string{"--max-queued", "many"}, nil, "--max-queued many: not a whole number"},
		{[]string{"--status-page=maybe"}, nil, "--status-page maybe: use true or false"},
		{[]string{"--nope"}, nil, "unknown flag --nope (asyncfn serve --help lists them)"},
		{[]string{"--grace"}, nil, "--grace needs a value"},
		{[]string{"--workers", "-1"}, nil, "--workers must not be negative"},
		{[]string{"--log-format", "xml"}, nil, "--log-format xml: use text or json"},
		{[]string{"extra"}, nil, `unexpected argument "extra"`},
	} {
		args := append([]string{"serve", "--addr", "127.0.0.1:0", "--store", "memory"}, tc.args...)
		_, stderr, err := runOutput(t, args, tc.env)
		if !isUsage(err) || err.Error() != tc.want && !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%v %v: %v, want a usage error %q", tc.args, tc.env, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "\n") || stderr != "") {
			t.Errorf("%v: the error %q is not one line alone (stderr %q)", tc.args, err, stderr)
		}
	}
	for _, tc := range []struct{ workers, want string }{{"1", "(store memory, 1 worker)"}, {"3", "(store memory, 3 workers)"}, {"0", "(store memory, 0 workers)"}} {
		stdout, _, err := runOutput(t, []string{"serve", "--addr", "127.0.0.1:0", "--store", "memory", "--workers", tc.workers}, nil)
		if err != nil || !strings.Contains(stdout, tc.want) {
			t.Errorf("--workers %s: banner %q (%v), want %s", tc.workers, stdout, err, tc.want)
		}
	}
}

// TestCommandList (point 7): an unknown command lists every command and suggests the
// nearest; version prints the module.
func TestCommandList(t *testing.T) {
	t.Parallel()
	_, _, err := runOutput(t, []string{"sevre"}, nil)
	if !isUsage(err) || !strings.Contains(err.Error(), `unknown command "sevre" (did you mean serve?)`) {
		t.Errorf("sevre: %v", err)
	}
	for _, c := range []string{"serve", "worker", "migrate", "dynamodb", "version"} {
		if err == nil || !strings.Contains(err.Error(), "\n  "+c+" ") {
			t.Errorf("the unknown command's error does not list %s: %v", c, err)
		}
	}
	if _, _, err := runOutput(t, []string{"xyzzy"}, nil); err == nil || strings.Contains(err.Error(), "did you mean") {
		t.Errorf("xyzzy: %v, want no suggestion", err)
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		if stdout, _, err := runOutput(t, args, nil); err != nil || !strings.HasPrefix(stdout, "asyncfn ") || !strings.Contains(stdout, "go1.") {
			t.Errorf("%v: %q, %v", args, stdout, err)
		}
	}
}

// TestExitCode: the status and the one line a main built on Main prints.
func TestExitCode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err    error
		code   int
		stderr string
	}{
		{nil, 0, ""},
		{flag.ErrHelp, 0, ""},
		{cli.Usagef("--x 5: bad"), 2, "prog: --x 5: bad\n"},
		{errors.New("asyncfn: store unavailable"), 1, "prog: store unavailable\n"},
		{errors.Join(errors.New("--store x: asyncfn: store unavailable: refused")), 1, "prog: --store x: store unavailable: refused\n"},
	} {
		var stderr strings.Builder
		if code := cli.ExitCode(&stderr, "prog", tc.err); code != tc.code || stderr.String() != tc.stderr {
			t.Errorf("ExitCode(%v) = %d, %q; want %d, %q", tc.err, code, stderr.String(), tc.code, tc.stderr)
		}
	}
}
