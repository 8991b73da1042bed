package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/funcfile"
)

// fileFlags load the functions file (package funcfile) of --config.
type fileFlags struct {
	path   string
	check  bool
	served *funcfile.Served // set by add when a file is given
}

func (f *fileFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.path, "config", "", "a functions file (YAML) declaring functions beside the built-in ones: synchronous services made asynchronous (http) and long-lived processes of any language (exec); see the README")
	fs.BoolVar(&f.check, "check", false, "check the functions file of --config (keys, values, secrets, commands, names) and exit without serving")
}

// load reads the file and checks its names against the binary's own functions (those of
// asyncfn's own pages are checked with the routes).
func (f *fileFlags) load(getenv func(string) string, builtIn []asyncfn.Function) (*funcfile.File, error) {
	file, err := funcfile.Load(f.path, getenv)
	if err != nil {
		return nil, err
	}
	for _, fn := range file.Functions {
		if slices.ContainsFunc(builtIn, func(b asyncfn.Function) bool { return b.Name == fn.Name }) {
			return nil, &funcfile.Error{File: file.Path, Line: fn.Line, Message: fmt.Sprintf("the function %s is already served by this binary: give yours another name", fn.Name)}
		}
	}
	return file, nil
}

// checkOnly does --check: it says what the file declares, or what is wrong with it.
func (f *fileFlags) checkOnly(getenv func(string) string, builtIn []asyncfn.Function, stdout io.Writer) error {
	if f.path == "" {
		return Usagef("--check checks the functions file: give it with --config FILE")
	}
	file, err := f.load(getenv, builtIn)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "asyncfn: %s is valid: %s\n", file.Path, plural(len(file.Functions), "function"))
	for _, fn := range file.Functions {
		fmt.Fprintf(stdout, "  /%s  %s\n", fn.Name, fn.Describe())
	}
	return nil
}

// add returns functions with the file's added, its processes started; close stops them.
func (f *fileFlags) add(getenv func(string) string, functions []asyncfn.Function, logger *slog.Logger) ([]asyncfn.Function, error) {
	if f.path == "" {
		return functions, nil
	}
	file, err := f.load(getenv, functions)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // starting the processes
	defer cancel()
	if f.served, err = file.Start(ctx, logger); err != nil {
		return nil, err
	}
	return append(slices.Clip(functions), f.served.Functions...), nil
}

// close stops the file's processes, after the runtime has stopped: SIGTERM, then SIGKILL
// after their grace period.
func (f *fileFlags) close(logger *slog.Logger) {
	if f.served == nil {
		return
	}
	if err := f.served.Close(context.Background()); err != nil {
		logger.Warn("stopping the functions file's processes", "err", err)
	}
}
