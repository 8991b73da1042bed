package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
)

// envName is the environment variable that stands in for a flag left unset.
func envName(flagName string) string {
	return "ASYNCFN_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// newFlagSet returns a flag set whose usage lists every flag with its default and its
// environment variable.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: asyncfn %s [flags]\n\n%s\n\nFlags (each also read from the environment variable named after it when not given):\n", name, synopsis)
		PrintFlags(stderr, fs, envName)
	}
	return fs
}

// flagError matches the errors of flag.FlagSet.Parse, to say them as the rest of the
// command line does (--name, the value as typed).
var flagError = regexp.MustCompile(`^(?:flag provided but not defined: -+(.+)|invalid (?:boolean )?value "(.*)" for (?:flag )?-(\S+): (.*)|flag needs an argument: -+(.+))$`)

// parseFlags parses args, then fills each flag not given on the command line from its
// ASYNCFN_* environment variable. On -h or --help it prints the usage and returns
// flag.ErrHelp; other errors are *UsageError naming the flag or variable at fault.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	usage := fs.Usage
	fs.Usage = func() {} // an error is one line, the usage is for --help
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.Usage = usage
	fs.SetOutput(out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return err
	case err != nil:
		m := flagError.FindStringSubmatch(err.Error())
		switch {
		case m == nil:
			return &UsageError{err}
		case m[1] != "":
			return Usagef("unknown flag --%s (asyncfn %s --help lists them)", m[1], fs.Name())
		case m[5] != "":
			return Usagef("--%s needs a value", m[5])
		}
		return Usagef("--%s %s: %s", m[3], m[2], valueError(fs.Lookup(m[3]), m[4]))
	case fs.NArg() > 0:
		return Usagef("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if setErr := f.Value.Set(v); setErr != nil {
				err = Usagef("%s=%s: %s", envName(f.Name), redact(v), valueError(f, setErr.Error()))
			}
		}
	})
	return err
}

// valueError says what is wrong with a flag's value where package flag only says "parse
// error".
func valueError(f *flag.Flag, msg string) string {
	if f == nil {
		return msg
	}
	g, ok := f.Value.(flag.Getter)
	if msg != "parse error" || !ok {
		return msg
	}
	switch g.Get().(type) {
	case bool:
		return "use true or false"
	case int, int64, uint, uint64:
		return "not a whole number"
	}
	return "not a valid value"
}

// logFlags are the flags of the logger, shared by every server command.
type logFlags struct {
	format string
	level  string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
	fs.StringVar(&l.level, "log-level", "info", "least severe level logged: debug, info, warn or error")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, Usagef("--log-level %s: use debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	w = redactingWriter{w}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, Usagef("--log-format %s: use text or json", l.format)
}
