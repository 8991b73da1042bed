package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/asyncfn/asyncfn/cli"
)

// newFlagSet returns the flag set of a client command, whose usage lists its flags as
// the server commands' do. Client commands read no ASYNCFN_* variables: serve's
// ASYNCFN_TIMEOUT, say, must not change the timeout of a call made beside it.
func newFlagSet(name, arguments, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: asyncfn %s %s\n\n%s\n\nFlags (anywhere before a --, after which every word is an argument):\n", name, arguments, synopsis)
		cli.PrintFlags(stderr, fs, nil)
	}
	return fs
}

// parseArgs sets the flags found anywhere among args, as curl and kubectl do, up to a
// "--" after which every word is an argument, and returns the arguments in order. So
// "call URL --input f.csv" reads f.csv instead of sending "--input" as a row. Errors
// are *cli.UsageError naming the flag; -h or --help prints the usage and returns
// flag.ErrHelp.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var words []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			return append(words, args[i+1:]...), nil
		}
		if len(arg) < 2 || arg[0] != '-' { // "-" is a word: standard input
			words = append(words, arg)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(arg[1:], "-"), "=")
		f := fs.Lookup(name)
		switch {
		case f == nil && (name == "h" || name == "help"):
			fs.Usage()
			return nil, flag.ErrHelp
		case f == nil:
			return nil, cli.Usagef("unknown flag --%s (asyncfn %s --help lists them; put a row that starts with - after --)", name, fs.Name())
		case !hasValue && isBoolFlag(f):
			value = "true"
		case !hasValue && i+1 == len(args):
			return nil, cli.Usagef("--%s needs a value", name)
		case !hasValue:
			i++
			value = args[i]
		}
		if err := fs.Set(name, value); err != nil {
			return nil, cli.Usagef("--%s %s: %v", name, value, err)
		}
	}
	return words, nil
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}
