package asyncfn_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn/dynamodb/dyntest"
)

// readmeBlock is a fenced sh or console block of README.md: its commands, continuation
// lines joined, "$ " and trailing "  # comments" removed.
type readmeBlock struct {
	line     int // of the opening fence
	commands []string
}

func readmeBlocks(t *testing.T) []readmeBlock {
	t.Helper()
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []readmeBlock
	var cur *readmeBlock
	lang, pending := "", ""
	comment := regexp.MustCompile(`\s{2,}#.*$`)
	for i, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && (trimmed == "```sh" || trimmed == "```console"):
			cur, lang = &readmeBlock{line: i + 1}, strings.TrimPrefix(trimmed, "```")
			continue
		case cur == nil:
			continue
		case trimmed == "```":
			blocks = append(blocks, *cur)
			cur = nil
			continue
		}
		if lang == "console" && pending == "" {
			if !strings.HasPrefix(trimmed, "$ ") {
				continue // output
			}
			trimmed = strings.TrimPrefix(trimmed, "$ ")
		}
		if strings.HasSuffix(trimmed, `\`) {
			pending += strings.TrimSuffix(trimmed, `\`) + " "
			continue
		}
		cmd := strings.TrimSpace(comment.ReplaceAllString(pending+trimmed, ""))
		pending = ""
		if cmd != "" && !strings.HasPrefix(cmd, "#") {
			cur.commands = append(cur.commands, cmd)
		}
	}
	return blocks
}

// The rules that decide what of the README runs here. A block is skipped whole when it
// names a reader's deployment (its later commands depend on it); a command when it needs
// what this machine lacks; everything else must be one of the runnable kinds, so that a
// new command in the README is either run or given a rule here.
var (
	deploymentRule = regexp.MustCompile(`db\.internal|/etc/asyncfn/|/run/secrets/|<[a-z ]+>|^docker |^sam |^aws `)
	skipRules      = []struct {
		re  *regexp.Regexp
		why string
	}{
		{regexp.MustCompile(`^go test\b|^bash \.ci/`), "runs the test suite, of which this test is part"},
		{regexp.MustCompile(`^make -C deploy/aws (deploy|sql)\b`), "deploys to an AWS account"},
	}
	runRules = regexp.MustCompile(`^(go install \./cmd/asyncfn|go run \./cmd/asyncfn |go run \./examples/upstreams|(\w+=\S+ )*asyncfn |curl |make -C deploy/aws\s*$)`)
	// serverRule: commands that serve until stopped (but --check, which exits); each must
	// print its first line, and runs until a later block starts another server, or the
	// test ends.
	serverRule = regexp.MustCompile(`^(go run \./examples/upstreams|(\w+=\S+ )*(go run \./cmd/asyncfn|asyncfn) (serve|worker)\b)`)
)

func isServer(command string) bool {
	return serverRule.MatchString(command) && !strings.Contains(command, " --check")
}

// TestReadmeCommands runs the README's shell and console commands, in order, in a copy of
// the checkout (as a fresh clone: committed with git, so that what the commands leave
// behind shows as untracked unless .gitignore covers it), with asyncfn installed by the
// README's own go install into a directory on PATH. Each command must succeed (curl: a 2xx
// answer); a server command must start. Bounded: three minutes per command.
func TestReadmeCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: installs asyncfn and runs the README's commands")
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed: it copies the checkout and checks that it stays clean")
	}
	for _, port := range []string{"8080", "9090"} {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second); err == nil {
			c.Close()
			t.Skipf("127.0.0.1:%s, which the README's commands use, is taken by another process", port)
		}
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "asyncfn")
	gobin := filepath.Join(dir, "bin")
	files, err := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, f := range strings.Split(strings.TrimRight(string(files), "\x00"), "\x00") {
		if data, err := os.ReadFile(f); err == nil { // not deleted in the work tree
			dst := filepath.Join(root, f)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			fi, _ := os.Stat(f)
			if err := os.WriteFile(dst, data, fi.Mode().Perm()); err != nil {
				t.Fatal(err)
			}
		}
	}
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	git("init", "-q")
	git("add", "-A")
	git("commit", "-q", "-m", "checkout")

	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ASYNCFN_") && !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "GOBIN=") {
			env = append(env, kv)
		}
	}
	env = append(env, "GOBIN="+gobin, "PATH="+gobin+string(os.PathListSeparator)+os.Getenv("PATH"))

	var servers []*exec.Cmd
	stopServers := func() {
		for _, s := range servers {
			syscall.Kill(-s.Process.Pid, syscall.SIGTERM)
			done := make(chan struct{})
			go func() { s.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(time.Minute):
				syscall.Kill(-s.Process.Pid, syscall.SIGKILL)
				<-done
			}
		}
		servers = nil
	}
	defer stopServers()

	ran := 0
	for _, b := range readmeBlocks(t) {
		if m := deploymentRule.FindString(strings.Join(b.commands, "\n")); m != "" {
			t.Logf("README.md:%d: skipped, it names a reader's deployment or a tool this machine lacks (%q): %v", b.line, m, b.commands)
			continue
		}
		for _, c := range b.commands {
			if isServer(c) {
				stopServers() // one server at a time, as a reader would run them
				break
			}
		}
	commands:
		for _, c := range b.commands {
			for _, r := range skipRules {
				if r.re.MatchString(c) {
					t.Logf("README.md:%d: %s: skipped, it %s", b.line, c, r.why)
					continue commands
				}
			}
			if !runRules.MatchString(c) {
				t.Errorf("README.md:%d: %s: no rule says whether it runs here; add one to readme_test.go", b.line, c)
				continue
			}
			ran++
			var stderr strings.Builder
			if isServer(c) {
				cmd := exec.Command("bash", "-c", strings.TrimSuffix(c, "&"))
				cmd.Dir, cmd.Env, cmd.Stderr = root, env, &stderr
				cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
				stdout, err := cmd.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				servers = append(servers, cmd)
				first := make(chan string, 1)
				go func() {
					br := bufio.NewReader(stdout)
					line, _ := br.ReadString('\n')
					first <- line
					io.Copy(io.Discard, br)
				}()
				var line string
				select {
				case line = <-first: // "" if it exits without a line
				case <-time.After(3 * time.Minute):
				}
				if !strings.HasPrefix(line, "asyncfn: ") {
					// Its standard error is read once it has stopped writing it.
					syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
					cmd.Wait()
					t.Errorf("README.md:%d: %s did not start: first line %q; stderr:\n%s", b.line, c, line, stderr.String())
				} else {
					t.Logf("README.md:%d: %s: %s", b.line, c, strings.TrimSpace(line))
				}
				continue
			}
			// A cross-compile on a cold build cache (make -C deploy/aws) takes minutes.
			ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
			cmd := exec.CommandContext(ctx, "bash", "-c", c)
			cmd.Dir, cmd.Env, cmd.Stderr = root, env, &stderr
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
			start := time.Now()
			out, err := cmd.Output()
			cancel()
			if err != nil {
				t.Errorf("README.md:%d: %s: %v\nstdout:\n%s\nstderr:\n%s", b.line, c, err, out, stderr.String())
				continue
			}
			if strings.HasPrefix(c, "curl -i") && !regexp.MustCompile(`^HTTP/1\.1 2\d\d `).Match(out) {
				t.Errorf("README.md:%d: %s answered\n%s", b.line, c, out)
			}
			t.Logf("README.md:%d: %s: ok in %v", b.line, c, time.Since(start).Round(time.Millisecond))
		}
	}
	stopServers()
	if ran < 8 {
		t.Errorf("only %d README commands ran: the rules or the blocks changed", ran)
	}
	// A clean tree stays clean: what the commands made (the store, the Lambda build) is
	// ignored.
	if st := git("status", "--porcelain", "--untracked-files=all"); st != "" {
		t.Errorf("the README's commands left files that .gitignore does not cover:\n%s", st)
	}
}

// TestReadmeAgrees checks the README's copies of what lives elsewhere: the main of
// examples/wordcount, and the dynalite command that the DynamoDB tests' skip message gives.
func TestReadmeAgrees(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("examples/wordcount/main.go")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)\nfunc main\\(\\) \\{\n.*?\n\\}\n").Find(readme)
	if m == nil || !strings.Contains(string(example), string(m)) {
		t.Errorf("the README's func main is not the one of examples/wordcount/main.go:\n%s", m)
	}
	if !strings.Contains(string(readme), dyntest.StartCommand) {
		t.Errorf("the README does not give the dynalite command of the skip message: %s", dyntest.StartCommand)
	}
	// The install step comes before the first bare asyncfn command.
	install := strings.Index(string(readme), "go install ./cmd/asyncfn")
	bare := regexp.MustCompile(`(?m)^(\$ )?asyncfn `).FindIndex(readme)
	if install < 0 || bare == nil || bare[0] < install {
		t.Errorf("the README uses a bare asyncfn (at byte %v) before go install ./cmd/asyncfn (at byte %d)", bare, install)
	}
}
