// Command wordcount is an example of a service with a function of your own: it serves
// /wordcount, which counts the words of a text, with every command and flag of asyncfn
// (serve, worker, migrate; --store, --sync-wait, ...).
//
//	go run ./examples/wordcount serve
//	curl -X POST localhost:8080/wordcount -H 'sf-external-function-query-batch-id: 1' \
//	     -d '{"data": [[0, "one two three"], [1, null]]}'
package main

import (
	"context"
	"encoding/json"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/cli"
)

// wordCount counts the words of its one argument; NULL gives NULL.
func wordCount(ctx context.Context, args []json.RawMessage) (any, error) {
	if len(args) != 1 {
		return nil, asyncfn.InvalidInputf("wordcount takes 1 argument, not %d.", len(args))
	}
	var text *string
	if err := json.Unmarshal(args[0], &text); err != nil {
		return nil, asyncfn.InvalidInputf("wordcount takes a string.")
	}
	if text == nil {
		return nil, nil
	}
	return len(strings.Fields(*text)), nil
}

var functions = []asyncfn.Function{{
	Name:    "wordcount",
	Func:    asyncfn.PerRow(wordCount),
	Timeout: time.Minute, // unset settings take their defaults
}}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, cli.Options{Functions: functions})
	stop()
	os.Exit(cli.ExitCode(os.Stderr, "wordcount", err)) // 0, 1, or 2 for a usage error
}
