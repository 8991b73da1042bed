// Command asyncfn is an asynchronous remote service for Snowflake external functions, and
// a client that calls such services as Snowflake does. main only wires: the server
// commands are package cli, the functions are their own packages.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/cli"
	"github.com/asyncfn/asyncfn/opentelemetry"
	"github.com/asyncfn/asyncfn/sentiment"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(cli.ExitCode(os.Stderr, "asyncfn", err))
}

// commands are the server commands and the client ones.
const commands = cli.Commands + `
  call     call an external-function service as Snowflake does, and print the rows
  bench    load an external-function service as Snowflake does, and report its speed`

const usage = `Usage: asyncfn <command> [flags]   (asyncfn <command> --help for its flags)

Commands:
` + commands + `
`

func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd := ""
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "call":
		return runCall(ctx, args[1:], getenv, stdin, stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], getenv, stdin, stdout, stderr)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return nil
	case "", "serve", "worker", "migrate", "dynamodb", "version", "-version", "--version":
	default:
		if cmd[0] != '-' { // flags alone run serve
			return cli.UnknownCommand(cmd, commands)
		}
	}
	return runServer(ctx, args, getenv, stdout, stderr)
}

// runServer runs a server command, traced when the OTEL_* variables ask for it.
func runServer(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	opts := cli.Options{Functions: functions()}
	tracing, err := opentelemetry.Setup(ctx, getenv)
	if err != nil {
		return err
	}
	if tracing != nil {
		defer func() {
			shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if err := tracing.Shutdown(shutdownCtx); err != nil {
				fmt.Fprintln(stderr, "asyncfn: flushing traces:", err)
			}
		}()
		opts.HTTPMiddleware = append(opts.HTTPMiddleware, tracing.HTTP())
		opts.Observers = append(opts.Observers, tracing.Observer())
	}
	return cli.Main(ctx, args, getenv, stdout, stderr, opts)
}

// functions are the functions asyncfn serves.
func functions() []asyncfn.Function {
	return append([]asyncfn.Function{{Name: "echo", Func: asyncfn.Echo}}, sentiment.Functions()...)
}
