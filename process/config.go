package process

import (
	"strconv"
	"strings"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/caller"
)

// Config configures a process pool. Each field documents its default, which
// DefaultConfig sets.
type Config struct {
	// Name is the function's route; it labels the pool's metrics and log lines. Required.
	Name string
	// Command is the program and its arguments, run without a shell, e.g.
	// ["python3", "score.py"]. Required.
	Command []string
	// Processes is how many copies of Command are kept running, and so how many batches
	// of the function run at once in this asyncfn process. Default 1.
	Processes int
	// Timeout bounds one batch's exchange: writing its line and reading the answer. A
	// process that takes longer is killed and restarted. Default 1 minute; keep it below
	// the function's timeout (5 minutes by default), so that a hung process is replaced
	// before the attempt is abandoned.
	Timeout time.Duration
	// Dir is the processes' working directory. Default empty: asyncfn's.
	Dir string
	// Env adds variables to the environment the processes inherit from asyncfn. Their
	// values may be secrets and are never logged. Default none.
	Env map[string]string
	// GracePeriod is how long Close waits, after SIGTERM, for the processes to exit before
	// it kills them. Default 10s.
	GracePeriod time.Duration
	// MaxLineBytes is the longest answer line read from a process, without its newline.
	// Default and maximum 10 MB, Snowflake's limit on one batch's answer.
	MaxLineBytes int
}

// Describe returns the command line, its arguments quoted where they need it: for the
// status page. (Secrets belong in Env, which it leaves out.)
func (c Config) Describe() string {
	words := make([]string, len(c.Command))
	for i, w := range c.Command {
		if w == "" || strings.ContainsAny(w, " \t\n\"'\\$") {
			w = strconv.Quote(w)
		}
		words[i] = w
	}
	return strings.Join(words, " ")
}

// DefaultConfig returns the defaults the fields document.
func DefaultConfig() Config {
	return Config{
		Processes:    1,
		Timeout:      time.Minute,
		GracePeriod:  10 * time.Second,
		MaxLineBytes: caller.MaxAnswerBytes,
	}
}

// FieldError is a Config field's bad value (asyncfn.FieldError), the type Validate returns.
type FieldError = asyncfn.FieldError

// Validate returns a *FieldError naming the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Name == "":
		return asyncfn.BadField("name", "is required")
	case len(c.Command) == 0 || c.Command[0] == "":
		return asyncfn.BadField("command", "is required: the program to run and its arguments")
	case c.Processes <= 0:
		return asyncfn.BadField("processes", "%d: must be positive", c.Processes)
	case c.Timeout <= 0:
		return asyncfn.BadField("timeout", "%s: must be positive", c.Timeout)
	case c.GracePeriod < 0:
		return asyncfn.BadField("grace-period", "%s: must not be negative", c.GracePeriod)
	case c.MaxLineBytes <= 0 || c.MaxLineBytes > caller.MaxAnswerBytes:
		return asyncfn.BadField("max-line-bytes", "%d: must be between 1 and %d, Snowflake's limit on an answer", c.MaxLineBytes, caller.MaxAnswerBytes)
	}
	for name, value := range c.Env {
		// Messages name the variable only: the value may be a secret.
		if name == "" || strings.ContainsAny(name, "=\x00") {
			return asyncfn.BadField("env", "%q: a variable's name must be non-empty without '=' or NUL", name)
		}
		if strings.ContainsRune(value, 0) {
			return asyncfn.BadField("env", "%s: the value contains NUL", name)
		}
	}
	return nil
}
