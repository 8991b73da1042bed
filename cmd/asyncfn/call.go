package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/asyncfn/asyncfn/caller"
	"github.com/asyncfn/asyncfn/cli"
)

const callSynopsis = `Calls the external-function service at URL exactly as Snowflake would: same headers,
batches, compression, polling of 202 answers, retries and checks of the answer, and
prints the results in input order. Rows come from the ARGs (one row each), from
--input, or from standard input (one row per line). Exits non-zero, naming the batch,
if any batch fails.`

// runCall implements "asyncfn call".
func runCall(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("call", "[flags] URL [ARG...]", callSynopsis, stderr)
	var cf clientFlags
	cf.register(fs, caller.DefaultConcurrency)
	var in inputFlags
	in.register(fs)
	fs.IntVar(&cf.batchRows, "max-batch-rows", caller.DefaultMaxBatchRows, "most rows per batch, as the function's MAX_BATCH_ROWS")
	output := fs.String("output", "table", "output format: table (like SnowSQL), csv, or json (JSON lines with the input and the value)")
	stats := fs.Bool("stats", false, "print batches, retries, polls and latency percentiles to standard error at the end")
	words, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(words) == 0 {
		return cli.Usagef("the service URL is missing: asyncfn call [flags] URL [ARG...]")
	}
	target, rowArgs := words[0], words[1:]
	format, err := caller.ParseOutputFormat(*output)
	if err != nil {
		return cli.Usagef("--output: %v", err)
	}
	types, err := cf.argTypes()
	if err != nil {
		return err
	}

	var rows caller.RowReader
	var progress *caller.Progress
	showProgress := isTerminal(stderr)
	switch {
	case len(rowArgs) > 0 && in.anySet():
		return cli.Usagef("give rows as arguments or with --input, --format and --columns, not both")
	case len(rowArgs) > 0 && types != nil && len(types) != 1:
		return cli.Usagef("%d argument types, but each ARG is a row of one argument: give rows of several columns with --input", len(types))
	case len(rowArgs) > 0:
		var t caller.ArgType // text unless typed
		if types != nil {
			t = types[0]
		}
		rows = caller.ArgsReader(rowArgs, t)
	default:
		src, size, closeInput, err := in.open(stdin)
		if err != nil {
			return err
		}
		defer closeInput()
		if showProgress {
			progress = caller.NewProgress(stderr, cf.batchRows, size)
			src = progress.Input(src)
		}
		if rows, err = in.reader(src, cf.batchRows, types); err != nil {
			return err
		}
	}
	cfg, err := cf.config(target, rows.Columns(), types, in.argType())
	if err != nil {
		return err
	}
	cfg.OnRetry = retryNotice(stderr)
	client, err := caller.NewClient(cfg)
	if err != nil { // a configuration made from the flags: --compression, say
		return &cli.UsageError{Err: err}
	}
	cfg = client.Config()
	// The output starts with the first answer, so a call that fails at once prints
	// only its error, as Snowflake shows no result for a failed query.
	var out caller.OutputWriter
	startOutput := func() (err error) {
		out, err = caller.NewOutputWriter(stdout, caller.OutputOptions{
			Format: format, Function: cfg.Function.Name, Columns: rows.Columns(),
			ReturnType: cfg.Function.ReturnType, BatchRows: cfg.MaxBatchRows,
		})
		return err
	}
	if progress != nil {
		rows = progress.Rows(rows)
		progress.Start()
	}
	summary, runErr := client.Run(ctx, rows, func(o caller.Outcome) error {
		if progress != nil {
			progress.Done(o)
		}
		if out == nil {
			if err := startOutput(); err != nil {
				return err
			}
		}
		return out.Write(o)
	})
	if progress != nil {
		progress.Stop()
	}
	var closeErr error
	if out == nil && runErr == nil {
		closeErr = startOutput()
	}
	if out != nil {
		closeErr = errors.Join(closeErr, out.Close())
	}
	if *stats {
		fmt.Fprint(stderr, summary.Report())
	}
	if runErr != nil {
		return refusedHint(runErr)
	}
	return closeErr
}

// retryNotice tells on w, once for each reason, what is being retried and why, so that
// waiting out the retry budget is never silent.
func retryNotice(w io.Writer) func(caller.Retry) {
	var mu sync.Mutex
	told := map[string]bool{}
	return func(r caller.Retry) {
		mu.Lock()
		defer mu.Unlock()
		if !told[r.Reason] {
			told[r.Reason] = true
			fmt.Fprintf(w, "asyncfn: %s %s: %s, retrying for up to %v; --retry-budget to change\n", r.Method, r.URL, r.Reason, r.Budget)
		}
	}
}

// refusedHint adds to a connection refused from the start how to wait for the service.
func refusedHint(err error) error {
	if errors.Is(err, caller.ErrRefused) {
		return fmt.Errorf("%w (refused before the service answered anything, so not retried: is the URL right? --wait-for-service waits for a service that is starting)", err)
	}
	return err
}

// clientFlags are the flags call and bench share: what the function is and how
// Snowflake would call it.
type clientFlags struct {
	name, signature, types, returnType, queryID, compression string
	headers, contexts                                        keyValues
	timeout, retryBudget                                     time.Duration
	concurrency, batchRows                                   int
	waitForService                                           bool
}

func (f *clientFlags) register(fs *flag.FlagSet, concurrency int) {
	f.headers, f.contexts = keyValues{}, keyValues{}
	fs.StringVar(&f.name, "name", "", "function name for headers and messages (empty: the URL's last path element, upper-cased)")
	fs.StringVar(&f.signature, "signature", "", "function signature for sf-external-function-signature, e.g. (A NUMBER, B VARCHAR); its types, as --types, decide how fields are sent (empty: made from the input's columns and --types)")
	fs.StringVar(&f.types, "types", "", "comma-separated SQL types of the arguments, e.g. NUMBER,BOOLEAN: line, CSV, TSV and ARG fields are sent as Snowflake sends these types (NUMBER as a number, BOOLEAN as true or false, VARIANT, OBJECT and ARRAY as JSON), an empty field as null but for text types (empty: every field as text; JSON lines as written)")
	fs.StringVar(&f.returnType, "return-type", "VARIANT", "return type for sf-external-function-return-type; text types show strings bare in the table")
	fs.StringVar(&f.queryID, "query-id", "", "query id to send (empty: a new random one)")
	fs.StringVar(&f.compression, "compression", string(caller.CompressionNone), "request body compression, as COMPRESSION: none, gzip or deflate")
	fs.Var(f.headers, "header", "K=V sent as sf-custom-K, as HEADERS (repeatable)")
	fs.Var(f.contexts, "context", "K=V sent as sf-context-K and sf-context-K-base64, as CONTEXT_HEADERS (repeatable)")
	cli.DurationVar(fs, &f.timeout, "timeout", caller.DefaultTimeout, "most time for one batch, polls included")
	cli.DurationVar(fs, &f.retryBudget, "retry-budget", caller.DefaultRetryBudget, "most total wait between retries of one batch (transport errors, 429, 5xx)")
	fs.IntVar(&f.concurrency, "concurrency", concurrency, "batches in flight at once")
	fs.BoolVar(&f.waitForService, "wait-for-service", false, "retry a connection refused before the service has answered once (a service still starting) within --retry-budget, instead of failing at once")
}

// argTypes reads the arguments' types out of --signature or --types; none when neither
// is given.
func (f *clientFlags) argTypes() ([]caller.ArgType, error) {
	switch {
	case f.signature != "" && f.types != "":
		return nil, cli.Usagef("give --signature or --types, not both: --types only shortens the signature")
	case f.signature != "":
		types, err := caller.ParseSignature(f.signature)
		if err != nil {
			return nil, cli.Usagef("--signature: %v", err)
		}
		return types, nil
	case f.types != "":
		types, err := caller.ParseArgTypes(f.types)
		if err != nil {
			return nil, cli.Usagef("--types: %v", err)
		}
		return types, nil
	}
	return nil, nil
}

// config builds the caller's configuration; the default signature names the input's
// columns with their types, or the type Snowflake would send untyped values as.
func (f *clientFlags) config(target string, columns []string, types []caller.ArgType, argType string) (caller.Config, error) {
	if f.concurrency < 1 || f.batchRows < 1 {
		return caller.Config{}, cli.Usagef("--concurrency and the rows per batch must be at least 1")
	}
	if f.timeout <= 0 || f.retryBudget < 0 {
		return caller.Config{}, cli.Usagef("--timeout must be positive and --retry-budget not negative")
	}
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return caller.Config{}, cli.Usagef("%q is not an http or https URL", target)
	}
	sig := f.signature
	if sig == "" {
		sig = signatureOf(columns, types, argType)
	}
	name := f.name
	if name == "" {
		name = caller.FunctionNameFromURL(u)
	}
	return caller.Config{
		URL:            target,
		Function:       caller.Function{Name: name, Signature: sig, ReturnType: f.returnType},
		QueryID:        f.queryID,
		CustomHeaders:  f.headers,
		ContextHeaders: f.contexts,
		Compression:    caller.Compression(strings.ToLower(f.compression)),
		Timeout:        f.timeout,
		RetryBudget:    f.retryBudget,
		WaitForService: f.waitForService,
		MaxBatchRows:   f.batchRows,
		Concurrency:    f.concurrency,
	}, nil
}

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*$`)

// signatureOf declares one argument per column, of its type in types or else of
// argType: (TEXT VARCHAR), or ARG1, ARG2, ... for columns without a usable name.
func signatureOf(columns []string, types []caller.ArgType, argType string) string {
	args := make([]string, len(columns))
	for i, c := range columns {
		name := strings.ToUpper(c)
		if !identifier.MatchString(c) {
			name = "ARG" + strconv.Itoa(i+1)
		}
		typ := argType
		if i < len(types) {
			typ = types[i].SQL
		}
		args[i] = name + " " + typ
	}
	return "(" + strings.Join(args, ", ") + ")"
}

// keyValues is a repeatable K=V flag.
type keyValues map[string]string

func (kv keyValues) String() string {
	pairs := make([]string, 0, len(kv))
	for k, v := range kv {
		pairs = append(pairs, k+"="+v)
	}
	return strings.Join(pairs, ",")
}

func (kv keyValues) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("%q is not K=V", s)
	}
	kv[strings.TrimSpace(k)] = v
	return nil
}

// inputFlags choose and read an input file.
type inputFlags struct {
	file, format, columns string
	noHeaderRow           bool
}

func (f *inputFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.file, "input", "", "read rows from this file (- or empty: standard input)")
	fs.StringVar(&f.format, "format", "", "input format: lines, csv, tsv or jsonl (empty: from the file's extension; lines for standard input)")
	fs.StringVar(&f.columns, "columns", "", "comma-separated columns to send as the arguments, by name or 1-based position (empty: all)")
	fs.BoolVar(&f.noHeaderRow, "no-header-row", false, "the CSV or TSV input has no header row; columns are named $1, $2, ...")
}

func (f *inputFlags) anySet() bool {
	return f.file != "" || f.format != "" || f.columns != "" || f.noHeaderRow
}

// open opens the input, standard input by default, and tells its size when it is a file.
func (f *inputFlags) open(stdin io.Reader) (r io.Reader, size int64, closeInput func(), err error) {
	if f.file == "" || f.file == "-" {
		return stdin, 0, func() {}, nil
	}
	file, err := os.Open(f.file)
	if err != nil {
		return nil, 0, nil, err
	}
	if info, err := file.Stat(); err == nil && info.Mode().IsRegular() {
		size = info.Size()
	}
	return file, size, func() { file.Close() }, nil
}

func (f *inputFlags) options(batchRows int, types []caller.ArgType) (caller.InputOptions, error) {
	opts := caller.InputOptions{Format: caller.FormatLines, NoHeaderRow: f.noHeaderRow, BatchRows: batchRows, Types: types}
	if f.file != "" && f.file != "-" {
		opts.Format = caller.FormatOf(f.file)
	}
	if f.format != "" {
		format, err := caller.ParseFormat(f.format)
		if err != nil {
			return opts, err
		}
		opts.Format = format
	}
	if f.columns != "" {
		opts.Columns = strings.Split(f.columns, ",")
	}
	return opts, nil
}

func (f *inputFlags) reader(r io.Reader, batchRows int, types []caller.ArgType) (caller.RowReader, error) {
	opts, err := f.options(batchRows, types)
	if err != nil {
		return nil, err
	}
	rows, err := caller.NewReader(r, opts)
	if err != nil && f.file != "" {
		return nil, fmt.Errorf("%s: %w", f.file, err)
	}
	return rows, err
}

// argType is the SQL type the input's values have: text from lines, CSV and TSV;
// anything from JSON lines.
func (f *inputFlags) argType() string {
	if opts, err := f.options(0, nil); err == nil && opts.Format == caller.FormatJSONL {
		return "VARIANT"
	}
	return "VARCHAR"
}

// isTerminal reports whether w is a terminal, where a progress line makes sense.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}
