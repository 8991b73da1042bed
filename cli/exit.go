package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"time"
)

// UsageError is a command line that cannot run as written: an unknown command or flag, a
// bad flag value, a missing or extra argument. It is told apart from a failure of the work
// itself so that the command can exit with status 2, as for any usage error.
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

// ExitCode ends a command as a main function built on Main should: it prints err, if
// any, on stderr as one "name: message" line (nothing for flag.ErrHelp: the help is
// printed) and returns the exit status: 0 for success and help, 2 for a *UsageError, 1
// for any other error.
//
//	err := cli.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, cli.Options{Functions: functions})
//	stop()
//	os.Exit(cli.ExitCode(os.Stderr, "wordcount", err))
func ExitCode(stderr io.Writer, name string, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	// The package prefix of asyncfn's errors ("asyncfn: store unavailable") would repeat
	// the command's.
	msg := strings.ReplaceAll(strings.TrimPrefix(err.Error(), "asyncfn: "), ": asyncfn: ", ": ")
	fmt.Fprintf(stderr, "%s: %s\n", name, msg)
	if _, ok := errors.AsType[*UsageError](err); ok {
		return 2
	}
	return 1
}

// UnknownCommand is the usage error for a command that is not among commands, a listing
// in the form of Commands (two spaces, the command, its description): it names the
// nearest command when one is close, and lists them all.
func UnknownCommand(name, commands string) error {
	var names []string
	for _, line := range strings.Split(commands, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(line, "  ") {
			names = append(names, f[0])
		}
	}
	hint := ""
	if near := nearest(name, names); near != "" {
		hint = fmt.Sprintf(" (did you mean %s?)", near)
	}
	return Usagef("unknown command %q%s; the commands are:\n%s", name, hint, strings.TrimRight(commands, "\n"))
}

// nearest returns the candidate closest to s, if it is close enough to be what was
// meant: at most two edits (a swap of neighbours counts one), or one for short words.
func nearest(s string, candidates []string) string {
	best, bestDist := "", 3
	if len(s) <= 3 {
		bestDist = 2
	}
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance: insertions, deletions,
// substitutions and swaps of adjacent letters, each one edit.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// Version describes the running binary from its build information: the main module's
// path and version, and the commit it was built from, as go build and go install record
// them in a git checkout.
func Version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown version (built without module information)"
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	v := fmt.Sprintf("%s %s", info.Main.Path, info.Main.Version)
	if rev := settings["vcs.revision"]; rev != "" {
		v += ", commit " + rev
		if t := settings["vcs.time"]; t != "" {
			v += " (" + t + ")"
		}
		if settings["vcs.modified"] == "true" {
			v += " with uncommitted changes"
		}
	} else {
		v += ", commit unknown (go build or go install in a git checkout records it)"
	}
	return v + ", " + info.GoVersion
}
