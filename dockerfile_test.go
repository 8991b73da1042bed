package asyncfn_test

// docker cannot build on every machine that runs the tests, so the Dockerfile and the
// deployment files are checked by reading them: the image is multi-stage, built static,
// and runs as a non-root user; the SPCS specification and SQL agree with each other and
// with the routes; the systemd unit is hardened.

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/asyncfn/asyncfn/cli"
)

// serveAsDeployed runs cli.Main with a deployment's command line and environment until it
// prints its banner, and returns the banner and the base URL. The server stops at cleanup.
func serveAsDeployed(t *testing.T, args []string, env map[string]string) (banner, url string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := cli.Main(ctx, args, func(k string) string { return env[k] }, pw, io.Discard, cli.Options{})
		pw.CloseWithError(io.EOF)
		done <- err
	}()
	br := bufio.NewReader(pr)
	line, err := br.ReadString('\n')
	if err != nil {
		cancel()
		t.Fatalf("%v with %v did not start: %v", args, env, <-done)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve returned %v after its context was cancelled", err)
		}
	})
	go io.Copy(io.Discard, br)
	m := regexp.MustCompile(`on (http://\S+) `).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("banner %q names no address", line)
	}
	return line, m[1]
}

// flagsIn returns the flags among args (a deployment's command line): each would win over
// the ASYNCFN_* variable the deployment documents for the same setting.
func flagsIn(args []string) []string {
	var flags []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			flags = append(flags, a)
		}
	}
	return flags
}

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case
	args string
}

type stage struct {
	from, name string
	body       []instruction
}

func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var stages []stage
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{strings.ToUpper(cmd), strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			var s stage
			for i := 0; i < len(f); i++ {
				switch {
				case strings.HasPrefix(f[i], "--"):
				case strings.EqualFold(f[i], "AS") && i+1 < len(f):
					s.name = f[i+1]
					i++
				case s.from == "":
					s.from = f[i]
				}
			}
			stages = append(stages, s)
			return
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Errorf("%s before the first FROM", in.cmd)
			}
			return
		}
		stages[len(stages)-1].body = append(stages[len(stages)-1].body, in)
	}
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") && cur.Len() == 0 {
			continue
		}
		if strings.HasPrefix(trimmed, "#") { // a comment inside a continued instruction
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		flush()
	}
	flush()
	return stages
}

func (s stage) all(cmd string) []string {
	var out []string
	for _, in := range s.body {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, "Dockerfile")
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a build stage and a runtime stage", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]
	if build.name == "" || !strings.HasPrefix(build.from, "golang:") {
		t.Errorf("the first stage is FROM %s AS %q, want a named golang stage", build.from, build.name)
	}
	// The build image's Go is the one go.mod asks for.
	mod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod); m == nil || !strings.HasPrefix(build.from, "golang:"+string(m[1])) {
		t.Errorf("the build stage is FROM %s, want golang:%s (go.mod)", build.from, m[1])
	}
	var buildCmd string
	for _, run := range build.all("RUN") {
		if strings.Contains(run, "go build") {
			buildCmd = run
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/asyncfn"} {
		if !strings.Contains(buildCmd, want) {
			t.Errorf("the go build command %q lacks %s", buildCmd, want)
		}
	}
	if !regexp.MustCompile(`-ldflags[= ]["']?-s -w["']?`).MatchString(buildCmd) {
		t.Errorf("the go build command %q does not strip symbols (-ldflags=\"-s -w\")", buildCmd)
	}

	if !strings.HasPrefix(final.from, "gcr.io/distroless/static") && final.from != "scratch" {
		t.Errorf("the runtime stage is FROM %s, want distroless/static or scratch", final.from)
	}
	if len(final.all("RUN")) > 0 {
		t.Errorf("the runtime stage runs commands; it should only copy the static binary")
	}
	copied := false
	for _, c := range final.all("COPY") {
		if strings.Contains(c, "--from="+build.name) && strings.Contains(c, "/asyncfn") {
			copied = true
		}
	}
	if !copied {
		t.Errorf("the runtime stage does not COPY --from=%s the binary", build.name)
	}
	users := final.all("USER")
	if len(users) == 0 {
		t.Fatalf("the runtime stage sets no USER: it would run as root")
	}
	user := users[len(users)-1]
	if u, _, _ := strings.Cut(user, ":"); u == "root" || u == "0" || (u != "nonroot" && u != "65532") {
		t.Errorf("USER %s, want nonroot or 65532", user)
	}
	if exp := final.all("EXPOSE"); len(exp) != 1 || exp[0] != "8080" {
		t.Errorf("EXPOSE %v, want 8080", exp)
	}
	eps := final.all("ENTRYPOINT")
	if len(eps) != 1 {
		t.Fatalf("%d ENTRYPOINTs, want one", len(eps))
	}
	var entry []string
	if err := json.Unmarshal([]byte(eps[0]), &entry); err != nil {
		t.Fatalf("ENTRYPOINT %s is not in exec (JSON) form, which gets signals: %v", eps[0], err)
	}
	if len(entry) < 2 || !strings.HasSuffix(entry[0], "/asyncfn") || entry[1] != "serve" {
		t.Errorf("ENTRYPOINT %v, want asyncfn serve", entry)
	}
	// Settings are ENV defaults that docker run -e overrides; a flag in the ENTRYPOINT
	// would win over the variable (ASYNCFN_STORE=postgres://... ignored).
	if f := flagsIn(entry); len(f) > 0 {
		t.Errorf("ENTRYPOINT %v sets %v: docker run -e could not change them; set ASYNCFN_* variables with ENV", entry, f)
	}
	env := map[string]string{}
	for _, e := range final.all("ENV") {
		for _, kv := range strings.Fields(e) {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
	}
	for k, want := range map[string]string{"ASYNCFN_ADDR": "0.0.0.0:8080", "ASYNCFN_STORE": "/data/asyncfn.db"} {
		if env[k] != want {
			t.Errorf("ENV %s=%q, want %q", k, env[k], want)
		}
	}
	// No secret, and no --insecure, is baked into the image.
	for _, s := range stages {
		for _, in := range s.body {
			if (in.cmd == "ENV" || in.cmd == "ARG") && regexp.MustCompile(`(?i)API_KEY|INSECURE`).MatchString(in.args) {
				t.Errorf("%s %s bakes a key or --insecure into the image", in.cmd, in.args)
			}
		}
	}
	// docker run -e ASYNCFN_STORE=... -e ASYNCFN_ADDR=... changes what the ENTRYPOINT serves.
	env["ASYNCFN_STORE"], env["ASYNCFN_ADDR"] = "memory", "127.0.0.1:0"
	if banner, _ := serveAsDeployed(t, entry[1:], env); !strings.Contains(banner, "(store memory,") || !strings.Contains(banner, "http://127.0.0.1:") {
		t.Errorf("the ENTRYPOINT with -e ASYNCFN_STORE=memory -e ASYNCFN_ADDR=127.0.0.1:0 printed %q", banner)
	}

	ignore, err := os.ReadFile(".dockerignore")
	if err != nil {
		t.Fatalf(".dockerignore: %v (without it the build context carries .git and databases)", err)
	}
	for _, want := range []string{".git", "*.db"} {
		if !strings.Contains(string(ignore), want) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
}

func TestSPCSDeployment(t *testing.T) {
	spec, err := os.ReadFile("deploy/spcs/service.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sql, err := os.ReadFile("deploy/spcs/setup.sql")
	if err != nil {
		t.Fatal(err)
	}
	y := string(spec)
	if strings.Contains(y, "\t") {
		t.Errorf("service.yaml contains tabs, which YAML forbids for indentation")
	}
	for _, re := range []string{
		`(?m)^spec:\n  containers:\n  - name: asyncfn\n`,
		`(?m)^    image: /asyncfn_db/public/asyncfn_repo/asyncfn:\S+$`,
		`(?m)^    readinessProbe:\n      port: 8080\n      path: /readyz$`,
		`(?m)^  endpoints:\n  - name: api\n    port: 8080\n`,
		`(?m)^      mountPath: /data$`, // where the image's --store points
	} {
		if !regexp.MustCompile(re).MatchString(y) {
			t.Errorf("service.yaml does not match %s", re)
		}
	}
	s := string(sql)
	for _, re := range []string{
		`(?i)CREATE IMAGE REPOSITORY IF NOT EXISTS asyncfn_repo`,
		`(?is)CREATE SERVICE IF NOT EXISTS asyncfn\s+IN COMPUTE POOL asyncfn_pool\s+FROM @\w+ SPECIFICATION_FILE = 'service.yaml'`,
		`(?is)CREATE (OR REPLACE )?FUNCTION sentiment\(text VARCHAR\)\s+RETURNS VARIANT\s+SERVICE = asyncfn\s+ENDPOINT = api\s+MAX_BATCH_ROWS = \d+\s+AS '/sentiment';`,
	} {
		if !regexp.MustCompile(re).MatchString(s) {
			t.Errorf("setup.sql does not match %s", re)
		}
	}
	// Every function's route is one the binary serves.
	for _, m := range regexp.MustCompile(`AS '/([^']+)'`).FindAllStringSubmatch(s, -1) {
		switch m[1] {
		case "sentiment", "vader", "echo":
		default:
			t.Errorf("setup.sql maps a function to /%s, which asyncfn does not serve", m[1])
		}
	}
	// The image path of the spec is the repository the SQL creates.
	if !strings.Contains(y, "/asyncfn_db/public/asyncfn_repo/") || !strings.Contains(s, "CREATE DATABASE IF NOT EXISTS asyncfn_db") {
		t.Errorf("service.yaml's image is not in the repository setup.sql creates")
	}
}

func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("deploy/systemd/asyncfn.service")
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string][]string{}
	for _, line := range strings.Split(strings.ReplaceAll(string(unit), "\\\n", " "), "\n") {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			settings[k] = append(settings[k], strings.TrimSpace(v))
		}
	}
	exec := strings.Fields(strings.Join(settings["ExecStart"], " "))
	if len(exec) < 2 || !strings.HasSuffix(exec[0], "/asyncfn") || exec[1] != "serve" {
		t.Errorf("ExecStart %v, want asyncfn serve", exec)
	}
	// Settings are Environment= defaults that the EnvironmentFile overrides; a flag in
	// ExecStart would win over the variable the file sets.
	if f := flagsIn(exec); len(f) > 0 {
		t.Errorf("ExecStart %v sets %v: /etc/asyncfn/asyncfn.env could not change them; use Environment=", exec, f)
	}
	if got := settings["EnvironmentFile"]; len(got) != 1 || got[0] != "-/etc/asyncfn/asyncfn.env" {
		t.Errorf("EnvironmentFile=%v, want -/etc/asyncfn/asyncfn.env", got)
	}
	// As systemd runs it: %S and %d expanded, then the env file's variables over the unit's.
	dir := t.TempDir()
	const key = "0123456789abcdef0123"
	if err := os.MkdirAll(filepath.Join(dir, "creds"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "creds", "api-keys"), []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	expand := strings.NewReplacer("%S", filepath.Join(dir, "state"), "%d", filepath.Join(dir, "creds"))
	env := map[string]string{}
	for _, e := range settings["Environment"] {
		k, v, _ := strings.Cut(expand.Replace(e), "=")
		env[k] = v
	}
	if env["ASYNCFN_ADDR"] != "0.0.0.0:8080" || env["ASYNCFN_API_KEY_FILE"] == "" {
		t.Errorf("Environment= gives %v, want ASYNCFN_ADDR=0.0.0.0:8080 and an ASYNCFN_API_KEY_FILE", env)
	}
	env["ASYNCFN_STORE"], env["ASYNCFN_ADDR"] = "memory", "127.0.0.1:0" // from asyncfn.env
	banner, url := serveAsDeployed(t, exec[1:], env)
	if !strings.Contains(banner, "(store memory,") {
		t.Errorf("with ASYNCFN_STORE=memory in the env file, the unit printed %q", banner)
	}
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /metrics without the credential's key: %d, want 401", resp.StatusCode)
	}
	for k, v := range map[string]string{
		"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
		"PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "", "RestrictNamespaces": "yes",
		"MemoryDenyWriteExecute": "yes", "StateDirectory": "asyncfn", "KillSignal": "SIGTERM",
	} {
		if got := settings[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s=%v, want %q", k, got, v)
		}
	}
	if len(settings["LoadCredential"]) == 0 {
		t.Errorf("no LoadCredential: the API keys would have to be on the command line or in the environment")
	}
}
