// Package funcfile reads a functions file: YAML that declares the functions a process
// serves beside those compiled into it, so that a data team puts asyncfn in front of what
// it already has without writing Go. A function is one of two kinds:
//
//   - http: a synchronous external-function service, which asyncfn makes asynchronous
//     (package upstream): each batch is POSTed to it as Snowflake would, with a timeout far
//     beyond a gateway's.
//   - exec: a command of any language kept running as a pool of processes (package
//     process), one JSON line in and one out per batch.
//
// The format, every key but name and url or command optional, with its default:
//
//	functions:
//	  - name: classify            # served at /classify
//	    max-attempts: 3           # attempts per batch (default: asyncfn's --max-attempts)
//	    backoff: 1s               # delay before a batch's first retry (default: --backoff)
//	    http:
//	      url: http://127.0.0.1:9000/classify
//	      timeout: 15m            # one attempt against the upstream, polls included
//	      concurrency: 16         # batches sent at once by this process
//	      request-attempts: 3     # sends of one request that fails (transport, 429, 5xx)
//	      min-backoff: 100ms      # wait before sending again, doubling up to max-backoff
//	      max-backoff: 10s
//	      poll-min: 20ms          # polls of an upstream that answers 202, growing to poll-max
//	      poll-max: 2s
//	      headers:                # sent with every request
//	        X-Team: data
//	        Authorization: {env: CLASSIFY_TOKEN, prefix: "Bearer "}
//	  - name: score
//	    exec:
//	      command: ["python3", "score.py"]
//	      processes: 1            # copies kept running: batches at once
//	      timeout: 1m             # one batch's exchange; a slower process is restarted
//	      dir: .                  # working directory (default: the file's directory)
//	      grace-period: 10s       # between SIGTERM and SIGKILL at shutdown
//	      max-line-bytes: 10485760
//	      env:                    # added to the environment asyncfn was given
//	        MODEL: small
//	        API_KEY: {file: /run/secrets/score-key}
//
// An http function in row mode (package upstream's RowConfig) calls an API once per row,
// its URL, method, headers and body templates over the row's arguments ({{arg 0}},
// {{json (arg 0)}}), the function's custom headers ({{header "language"}}) and its
// secrets ({{secret "openai"}}), each pinned to the hosts it may be sent to; rows
// answered are saved as the batch runs (checkpoint), so that an attempt after a crash
// calls the API only for the others:
//
//   - name: chat
//     checkpoint: {rows: 100, interval: 5s}   # the default of row mode
//     http:
//     mode: row               # batch (the default) or row
//     url: https://api.openai.com/v1/chat/completions
//     method: POST
//     headers:
//     Authorization: 'Bearer {{secret "openai"}}'
//     body: '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": {{json (arg 0)}}}]}'
//     secrets:
//     openai: {env: OPENAI_API_KEY, hosts: [api.openai.com]}
//     result: choices.0.message.content   # the part of the answer that is the row's value
//     on-error: fail          # a row that fails: fail (the batch), null, or error (an object)
//     concurrency: 8          # requests in flight, shared by the function's batches
//     rate: 10                # requests per second (default: no limit), burst: 10
//     request-attempts: 3     # sends of a request failing transiently (429, 5xx, timeout)
//     min-backoff: 100ms
//     max-backoff: 10s
//     request-timeout: 60s
//     timeout: 30m            # one attempt of a batch, every row's requests
//
// A header's or variable's value is a string, or a secret read when the file is loaded:
// {env: NAME} from an environment variable, {file: PATH} from a file (its last line break
// removed; a relative PATH is the file's directory's), each with an optional prefix.
// Secrets are never logged nor shown (the status page shows an http function's URL
// without its credentials and query, and an exec function's command).
//
// Unknown keys, values of the wrong type, bad durations and bad settings are errors that
// name the file and line (*Error).
package funcfile

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/process"
	"github.com/asyncfn/asyncfn/upstream"
)

// File is a loaded functions file.
type File struct {
	// Path is the file as it was named.
	Path      string
	Functions []Function
}

// Function is one function of the file: exactly one of HTTP and Exec is set, validated,
// with its secrets read.
type Function struct {
	Name string
	// Line is where the function's entry starts.
	Line int
	// MaxAttempts and Backoff are the asyncfn.Function settings; 0 takes the serving
	// process's defaults.
	MaxAttempts int
	Backoff     time.Duration
	// Checkpoint, if set, replaces the function's own setting (a per-row http
	// function's is asyncfn.DefaultCheckpoint; others do not report rows).
	Checkpoint *asyncfn.CheckpointConfig
	// HTTP is an http function's in batch mode, Rows in row mode.
	HTTP *upstream.Config
	Rows *upstream.RowConfig
	Exec *process.Config
}

// Describe returns what the function runs, without secrets: "http URL", "http per row:
// URL" or "exec COMMAND".
func (f Function) Describe() string {
	switch {
	case f.HTTP != nil:
		return "http " + f.HTTP.Describe()
	case f.Rows != nil:
		where, _, _ := strings.Cut(f.Rows.URL, "?")
		return "http per row: " + where
	}
	return "exec " + f.Exec.Describe()
}

// Error is a mistake in a functions file, at a line (0 when it is the file's as a whole).
type Error struct {
	File    string
	Line    int
	Message string
}

func (e *Error) Error() string {
	if e.Line == 0 {
		return e.File + ": " + e.Message
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Message)
}

// Load reads and checks the functions file at path; secrets given as {env: NAME} are read
// through getenv. Errors are *Error, or the file's read error.
func Load(path string, getenv func(string) string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("the functions file: %w", err)
	}
	return Parse(data, path, getenv)
}

// Parse is Load of data, read from path (which names the file in errors and is the base
// of its relative paths).
func Parse(data []byte, path string, getenv func(string) string) (*File, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	p := &parser{file: path, dir: filepath.Dir(abs), getenv: getenv}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, p.syntaxError(err)
	}
	f := &File{Path: path}
	if len(doc.Content) == 0 || doc.Content[0].ShortTag() == "!!null" {
		return nil, &Error{File: path, Message: "the file is empty: declare functions under the key functions"}
	}
	var list *yaml.Node
	err = p.mapping(doc.Content[0], "the file", func(k, v *yaml.Node) error {
		key := k.Value
		switch key {
		case "functions":
			list = v
			return nil
		}
		return p.unknown(k, "the file", "functions")
	})
	if err != nil {
		return nil, err
	}
	if list == nil || list.Kind != yaml.SequenceNode || len(list.Content) == 0 {
		return nil, &Error{File: path, Line: doc.Content[0].Line, Message: "functions: list at least one function, each with a name and http or exec"}
	}
	seen := map[string]int{}
	for _, n := range list.Content {
		fn, err := p.function(n)
		if err != nil {
			return nil, err
		}
		if line, dup := seen[fn.Name]; dup {
			return nil, p.errorf(n, "the function %s is declared twice (first at line %d)", fn.Name, line)
		}
		seen[fn.Name] = fn.Line
		f.Functions = append(f.Functions, fn)
	}
	return f, nil
}

// parser reads one file's nodes into Functions.
type parser struct {
	file   string
	dir    string // the file's directory, absolute
	getenv func(string) string
}

func (p *parser) errorf(n *yaml.Node, format string, args ...any) *Error {
	return &Error{File: p.file, Line: n.Line, Message: fmt.Sprintf(format, args...)}
}

// syntaxError turns the YAML library's "yaml: line N: ..." into an *Error at line N.
func (p *parser) syntaxError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, text, ok := strings.Cut(rest, ": "); ok {
			if line, convErr := strconv.Atoi(num); convErr == nil {
				return &Error{File: p.file, Line: line, Message: "not valid YAML: " + text}
			}
		}
	}
	return &Error{File: p.file, Message: "not valid YAML: " + msg}
}

// mapping calls set for each key of the mapping n (what names it in errors), refusing a
// key given twice.
func (p *parser) mapping(n *yaml.Node, what string, set func(k, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return p.errorf(n, "%s must be a mapping of keys to values", what)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			return p.errorf(k, "%s: the key %s is given twice", what, k.Value)
		}
		seen[k.Value] = true
		if err := set(k, v); err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) unknown(k *yaml.Node, what string, known ...string) error {
	return p.errorf(k, "%s: unknown key %s (the keys are %s)", what, k.Value, strings.Join(known, ", "))
}

var (
	functionKeys = []string{"name", "max-attempts", "backoff", "checkpoint", "http", "exec"}
	httpKeys     = []string{"mode", "url", "timeout", "concurrency", "request-attempts", "min-backoff", "max-backoff", "poll-min", "poll-max", "headers"}
	rowKeys      = []string{"mode", "url", "method", "headers", "body", "secrets", "result", "on-error", "concurrency", "rate", "burst", "request-attempts", "min-backoff", "max-backoff", "request-timeout", "timeout"}
	execKeys     = []string{"command", "processes", "timeout", "dir", "env", "grace-period", "max-line-bytes"}
)

// function reads one entry of the list.
func (p *parser) function(n *yaml.Node) (Function, error) {
	fn := Function{Line: n.Line}
	var httpNode, execNode *yaml.Node
	err := p.mapping(n, "a function", func(k, v *yaml.Node) error {
		key := k.Value
		switch key {
		case "name":
			return p.str(v, key, &fn.Name)
		case "max-attempts":
			return p.positive(v, key, &fn.MaxAttempts)
		case "backoff":
			return p.duration(v, key, &fn.Backoff)
		case "checkpoint":
			fn.Checkpoint = &asyncfn.CheckpointConfig{}
			return p.checkpoint(v, fn.Checkpoint)
		case "http":
			httpNode = v
			return nil
		case "exec":
			execNode = v
			return nil
		}
		return p.unknown(k, "a function", functionKeys...)
	})
	switch {
	case err != nil:
		return fn, err
	case fn.Name == "":
		return fn, p.errorf(n, "a function has no name: give it one, its route (name: classify serves /classify)")
	case asyncfn.CheckName(fn.Name) != nil:
		return fn, p.errorf(n, "%v", asyncfn.CheckName(fn.Name))
	case httpNode == nil && execNode == nil:
		return fn, p.errorf(n, "the function %s has neither http nor exec: say what serves it", fn.Name)
	case httpNode != nil && execNode != nil:
		return fn, p.errorf(execNode, "the function %s has both http and exec: keep one", fn.Name)
	case httpNode != nil:
		var mode string
		if mode, err = p.mode(fn.Name, httpNode); err != nil {
			return fn, err
		}
		if mode == "row" {
			fn.Rows, err = p.rows(fn.Name, httpNode)
		} else {
			fn.HTTP, err = p.http(fn.Name, httpNode)
		}
	default:
		fn.Exec, err = p.exec(fn.Name, execNode)
	}
	return fn, err
}

func (p *parser) http(name string, n *yaml.Node) (*upstream.Config, error) {
	cfg := upstream.DefaultConfig()
	cfg.Name = name
	what := name + ": http"
	lines, err := p.section(n, what, httpKeys, rowKeys, "row", func(key string, v *yaml.Node) (bool, error) {
		switch key {
		case "mode":
			return true, nil // read by mode
		case "url":
			return true, p.str(v, key, &cfg.URL)
		case "timeout":
			return true, p.duration(v, key, &cfg.Timeout)
		case "poll-min":
			return true, p.duration(v, key, &cfg.PollMin)
		case "poll-max":
			return true, p.duration(v, key, &cfg.PollMax)
		case "headers":
			return true, p.values(v, key, &cfg.Headers)
		}
		return p.sending(key, v, &cfg.Concurrency, &cfg.RequestAttempts, &cfg.MinBackoff, &cfg.MaxBackoff)
	})
	if err != nil {
		return nil, err
	}
	if cfg.URL == "" {
		return nil, p.errorf(n, "%s: url is required: the upstream's endpoint, http://host/path", what)
	}
	return &cfg, p.invalid(n, what, lines, cfg.Validate())
}

// mode returns the mode of an http function: batch (the default) or row.
func (p *parser) mode(name string, n *yaml.Node) (string, error) {
	if n.Kind != yaml.MappingNode {
		return "", p.errorf(n, "%s: http must be a mapping of keys to values", name)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k, v := n.Content[i], n.Content[i+1]; k.Value == "mode" {
			if v.Kind != yaml.ScalarNode || (v.Value != "batch" && v.Value != "row") {
				return "", p.errorf(v, "%s: http: mode is batch (each batch sent whole, the default) or row (one request per row)", name)
			}
			return v.Value, nil
		}
	}
	return "batch", nil
}

// rows reads an http function in row mode.
func (p *parser) rows(name string, n *yaml.Node) (*upstream.RowConfig, error) {
	cfg := upstream.DefaultRowConfig()
	cfg.Name = name
	what := name + ": http"
	lines, err := p.section(n, what, rowKeys, httpKeys, "batch", func(key string, v *yaml.Node) (bool, error) {
		switch key {
		case "mode":
			return true, nil // read by mode
		case "url":
			return true, p.str(v, key, &cfg.URL)
		case "method":
			return true, p.str(v, key, &cfg.Method)
		case "headers":
			return true, p.templates(v, key, &cfg.Headers)
		case "body":
			return true, p.str(v, key, &cfg.Body)
		case "secrets":
			return true, p.secrets(v, &cfg.Secrets)
		case "result":
			return true, p.str(v, key, &cfg.Result)
		case "on-error":
			return true, p.str(v, key, &cfg.OnError)
		case "rate":
			return true, p.rate(v, key, &cfg.Rate)
		case "burst":
			return true, p.positive(v, key, &cfg.Burst)
		case "request-timeout":
			return true, p.duration(v, key, &cfg.RequestTimeout)
		case "timeout":
			return true, p.duration(v, key, &cfg.Timeout)
		}
		return p.sending(key, v, &cfg.Concurrency, &cfg.RequestAttempts, &cfg.MinBackoff, &cfg.MaxBackoff)
	})
	if err != nil {
		return nil, err
	}
	if cfg.URL == "" {
		return nil, p.errorf(n, "%s: url is required: a template of each row's request URL", what)
	}
	return &cfg, p.invalid(n, what, lines, cfg.Validate())
}

// sending reads the keys both modes of http share, reporting whether key is one.
func (p *parser) sending(key string, v *yaml.Node, concurrency, attempts *int, minBackoff, maxBackoff *time.Duration) (bool, error) {
	switch key {
	case "concurrency":
		return true, p.positive(v, key, concurrency)
	case "request-attempts":
		return true, p.positive(v, key, attempts)
	case "min-backoff":
		return true, p.duration(v, key, minBackoff)
	case "max-backoff":
		return true, p.duration(v, key, maxBackoff)
	}
	return false, nil
}

// section reads the mapping n of a function's kind (what names it in errors): set reads
// the keys it knows, reporting whether key is one; a key of the other mode is refused
// naming that mode, any other listing the known keys. It returns each key's line, for
// Validate's errors.
func (p *parser) section(n *yaml.Node, what string, known, otherKeys []string, otherMode string, set func(key string, v *yaml.Node) (bool, error)) (map[string]int, error) {
	lines := map[string]int{}
	err := p.mapping(n, what, func(k, v *yaml.Node) error {
		lines[k.Value] = v.Line
		if ok, err := set(k.Value, v); ok || err != nil {
			return err
		}
		if slices.Contains(otherKeys, k.Value) {
			return p.errorf(k, "%s: %s applies to mode: %s only", what, k.Value, otherMode)
		}
		return p.unknown(k, what, known...)
	})
	return lines, err
}

// templates reads a row-mode function's headers: texts (templates) only, as a secret
// must name the hosts it may go to (secrets, and {{secret "NAME"}} in the template).
func (p *parser) templates(v *yaml.Node, key string, out *map[string]string) error {
	m := map[string]string{}
	err := p.mapping(v, key, func(k, val *yaml.Node) error {
		if val.Kind != yaml.ScalarNode || val.ShortTag() == "!!null" {
			return p.errorf(val, `%s %s: give a text (a template); a secret goes under secrets, with the hosts it may be sent to, and into the text as {{secret "NAME"}}`, key, k.Value)
		}
		m[k.Value] = val.Value
		return nil
	})
	*out = m
	return err
}

// secrets reads a row-mode function's secrets: each {env: NAME} or {file: PATH}, with an
// optional prefix, and the hosts it may be sent to.
func (p *parser) secrets(v *yaml.Node, out *map[string]upstream.Secret) error {
	m := map[string]upstream.Secret{}
	err := p.mapping(v, "secrets", func(k, val *yaml.Node) error {
		var sec upstream.Secret
		value, err := p.value(val, "secrets "+k.Value, &sec.Hosts)
		sec.Value = value
		m[k.Value] = sec
		return err
	})
	*out = m
	return err
}

func (p *parser) rate(v *yaml.Node, key string, out *float64) error {
	if err := p.scalar(v, key, "a number of requests per second"); err != nil {
		return err
	}
	r, err := strconv.ParseFloat(v.Value, 64)
	if err != nil || !(r > 0) || math.IsInf(r, 0) {
		return p.errorf(v, "%s: %q is not a positive number of requests per second", key, v.Value)
	}
	*out = r
	return nil
}

func (p *parser) checkpoint(v *yaml.Node, out *asyncfn.CheckpointConfig) error {
	return p.mapping(v, "checkpoint", func(k, val *yaml.Node) error {
		switch k.Value {
		case "rows":
			return p.positive(val, "checkpoint rows", &out.Rows)
		case "interval":
			return p.duration(val, "checkpoint interval", &out.Interval)
		}
		return p.unknown(k, "checkpoint", "rows", "interval")
	})
}

func (p *parser) exec(name string, n *yaml.Node) (*process.Config, error) {
	cfg := process.DefaultConfig()
	cfg.Name = name
	cfg.Dir = p.dir
	what := name + ": exec"
	lines, err := p.section(n, what, execKeys, nil, "", func(key string, v *yaml.Node) (bool, error) {
		switch key {
		case "command":
			return true, p.command(v, &cfg.Command)
		case "processes":
			return true, p.positive(v, key, &cfg.Processes)
		case "timeout":
			return true, p.duration(v, key, &cfg.Timeout)
		case "dir":
			err := p.str(v, key, &cfg.Dir)
			cfg.Dir = p.resolve(cfg.Dir)
			return true, err
		case "env":
			return true, p.values(v, key, &cfg.Env)
		case "grace-period":
			return true, p.duration(v, key, &cfg.GracePeriod)
		case "max-line-bytes":
			return true, p.positive(v, key, &cfg.MaxLineBytes)
		}
		return false, nil
	})
	if err != nil {
		return nil, err
	}
	if len(cfg.Command) == 0 {
		return nil, p.errorf(n, `%s: command is required: the program and its arguments, as ["python3", "score.py"]`, what)
	}
	if err := p.invalid(n, what, lines, cfg.Validate()); err != nil {
		return nil, err
	}
	if info, err := os.Stat(cfg.Dir); err != nil || !info.IsDir() {
		return nil, p.at(n, lines, "dir", "%s: dir %s is not a directory", what, cfg.Dir)
	}
	if err := findProgram(cfg.Command[0], cfg.Dir); err != nil {
		return nil, p.at(n, lines, "command", "%s: command %s: %v", what, cfg.Command[0], err)
	}
	return &cfg, nil
}

// findProgram reports whether program can be started from dir, as os/exec will look for
// it: in PATH if it has no slash, else relative to dir.
func findProgram(program, dir string) error {
	if !strings.Contains(program, "/") {
		_, err := exec.LookPath(program)
		if errors.Is(err, exec.ErrNotFound) {
			return errors.New("not found in PATH")
		}
		return err
	}
	if !filepath.IsAbs(program) {
		program = filepath.Join(dir, program)
	}
	info, err := os.Stat(program)
	switch {
	case err != nil:
		return errors.New("no such file")
	case info.IsDir() || info.Mode()&0o111 == 0:
		return errors.New("not an executable file")
	}
	return nil
}

// invalid turns a Validate error into an *Error at the line of the key it names (the
// section's when the key is not in the file: a default that conflicts with a value).
func (p *parser) invalid(n *yaml.Node, what string, lines map[string]int, err error) error {
	var fe *asyncfn.FieldError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return p.at(n, lines, fe.Field, "%s: %s %s", what, fe.Field, fe.Message)
	}
	return p.errorf(n, "%s: %v", what, err)
}

// at is an error at the line of key in lines, or of n if the key is not there.
func (p *parser) at(n *yaml.Node, lines map[string]int, key, format string, args ...any) *Error {
	e := p.errorf(n, format, args...)
	if line, ok := lines[key]; ok {
		e.Line = line
	}
	return e
}

func (p *parser) resolve(path string) string {
	if path == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(p.dir, path)
}

func (p *parser) scalar(v *yaml.Node, key, want string) error {
	if v.Kind != yaml.ScalarNode || v.ShortTag() == "!!null" {
		return p.errorf(v, "%s must be %s", key, want)
	}
	return nil
}

func (p *parser) str(v *yaml.Node, key string, out *string) error {
	if err := p.scalar(v, key, "a text"); err != nil {
		return err
	}
	*out = v.Value
	return nil
}

func (p *parser) positive(v *yaml.Node, key string, out *int) error {
	if err := p.scalar(v, key, "a whole number"); err != nil {
		return err
	}
	n, err := strconv.Atoi(strings.ReplaceAll(v.Value, "_", ""))
	if err != nil || n <= 0 {
		return p.errorf(v, "%s: %q is not a positive whole number", key, v.Value)
	}
	*out = n
	return nil
}

func (p *parser) duration(v *yaml.Node, key string, out *time.Duration) error {
	if err := p.scalar(v, key, "a duration such as 500ms, 30s or 15m"); err != nil {
		return err
	}
	d, err := time.ParseDuration(v.Value)
	if err != nil || d <= 0 {
		return p.errorf(v, "%s: %q is not a positive duration; write it as 500ms, 30s or 15m", key, v.Value)
	}
	*out = d
	return nil
}

func (p *parser) command(v *yaml.Node, out *[]string) error {
	return p.list(v, "command", `the program and its arguments, as ["python3", "score.py"] (no shell runs it)`, out)
}

// list reads a non-empty list of texts; want says what it holds.
func (p *parser) list(v *yaml.Node, key, want string, out *[]string) error {
	if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
		return p.errorf(v, "%s must be a list: %s", key, want)
	}
	for _, w := range v.Content {
		if err := p.scalar(w, "each of "+key, "a text"); err != nil {
			return err
		}
		*out = append(*out, w.Value)
	}
	return nil
}

// values reads a mapping of names to values or secrets (headers, env).
func (p *parser) values(v *yaml.Node, key string, out *map[string]string) error {
	m := map[string]string{}
	err := p.mapping(v, key, func(k, val *yaml.Node) error {
		s, err := p.value(val, key+" "+k.Value, nil)
		m[k.Value] = s
		return err
	})
	*out = m
	return err
}

// value reads a text, or a secret: {env: NAME} or {file: PATH}, with an optional prefix,
// and, if hosts is not nil, the hosts it may be sent to, which must then be given.
// Messages never quote a secret's value.
func (p *parser) value(v *yaml.Node, what string, hosts *[]string) (string, error) {
	if v.Kind == yaml.ScalarNode && v.ShortTag() != "!!null" && hosts == nil {
		return v.Value, nil
	}
	want := "give a text, or a secret as {env: NAME} or {file: PATH}, with an optional prefix"
	if hosts != nil {
		want = "give the secret as {env: NAME, hosts: [HOST]} or {file: PATH, hosts: [HOST]}, with an optional prefix"
	}
	if v.Kind != yaml.MappingNode {
		return "", p.errorf(v, "%s: %s", what, want)
	}
	var env, file, prefix string
	keys := []string{"env", "file", "prefix"}
	if hosts != nil {
		keys = append(keys, "hosts")
	}
	err := p.mapping(v, what, func(k, n *yaml.Node) error {
		switch {
		case k.Value == "env":
			return p.str(n, what+" env", &env)
		case k.Value == "file":
			return p.str(n, what+" file", &file)
		case k.Value == "prefix":
			return p.str(n, what+" prefix", &prefix)
		case k.Value == "hosts" && hosts != nil:
			return p.list(n, what+" hosts", "the hosts the secret may be sent to, as [api.openai.com]", hosts)
		}
		return p.unknown(k, what, keys...)
	})
	switch {
	case err != nil:
		return "", err
	case hosts != nil && len(*hosts) == 0:
		return "", p.errorf(v, "%s: hosts is required: the hosts the secret may be sent to, as [api.openai.com]", what)
	case (env == "") == (file == ""):
		return "", p.errorf(v, "%s: %s (one of env and file)", what, want)
	case env != "":
		secret := p.getenv(env)
		if secret == "" {
			return "", p.errorf(v, "%s: the environment variable %s is not set", what, env)
		}
		return prefix + secret, nil
	}
	data, err := os.ReadFile(p.resolve(file))
	if err != nil {
		return "", p.errorf(v, "%s: %v", what, err)
	}
	secret := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	if secret == "" {
		return "", p.errorf(v, "%s: the file %s is empty", what, file)
	}
	return prefix + secret, nil
}
