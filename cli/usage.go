package cli

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
)

// PrintFlags lists fs's flags as every asyncfn command's usage does: --name on a line of
// its own, then what it does and its default; and, when env is not nil, the environment
// variable that stands in for it.
func PrintFlags(w io.Writer, fs *flag.FlagSet, env func(flagName string) string) {
	fs.VisitAll(func(f *flag.Flag) {
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		if env == nil {
			fmt.Fprintf(w, "  --%s\n        %s (default %s)\n", f.Name, f.Usage, def)
			return
		}
		fmt.Fprintf(w, "  --%s\n        %s (default %s; env %s)\n", f.Name, f.Usage, def, env(f.Name))
	})
}

// UsageError is a command line that cannot run as written: an unknown flag, a bad flag
// value, a missing or extra argument. It is told apart from a failure of the work itself
// so that the command can exit with status 2, as for any usage error.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a *UsageError with the formatted message.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// DurationVar defines a duration flag like fs.DurationVar, but whose error for a number
// without a unit says a unit is needed, since "5" alone may mean seconds or minutes.
func DurationVar(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var((*durationValue)(p), name, usage)
}

type durationValue time.Duration

func (d *durationValue) String() string { return (*time.Duration)(d).String() }

func (d *durationValue) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		if s != "" && strings.Trim(s, "0123456789.") == "" {
			return fmt.Errorf("a duration needs a unit, such as %ss", s)
		}
		return fmt.Errorf("not a duration, such as 300ms, 5s or 2m")
	}
	*d = durationValue(v)
	return nil
}
