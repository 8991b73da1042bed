package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/asyncfn/asyncfn/caller"
	"github.com/asyncfn/asyncfn/cli"
)

const benchSynopsis = `Loads the external-function service at URL as Snowflake would, with the same caller as
"asyncfn call" (every check of the answers included), and prints rows and batches per
second, POST, GET and whole-batch latency percentiles, polls per batch, retries and
errors. With --baseline it first runs the same load against an in-process synchronous
echo handler on 127.0.0.1 and prints the ratio of the two throughputs.`

// runBench implements "asyncfn bench".
func runBench(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", "[flags] URL", benchSynopsis, stderr)
	var cf clientFlags
	cf.register(fs, 16)
	var in inputFlags
	in.register(fs)
	fs.IntVar(&cf.batchRows, "rows", caller.DefaultMaxBatchRows, "rows per batch")
	batches := fs.Int("batches", 256, "batches to send (256 x 4096 rows is about a million rows); 0 with --duration: until the duration is over")
	var duration time.Duration
	cli.DurationVar(fs, &duration, "duration", 0, "stop starting batches after this long (0: no limit); without --batches, run for this long")
	baseline := fs.Bool("baseline", false, "first run the same load against an in-process synchronous echo handler, then print the ratio service/baseline rows per second")
	jsonOut := fs.Bool("json", false, "print one JSON line instead of the text report")
	words, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(words) != 1 {
		return cli.Usagef("give exactly one service URL: asyncfn bench [flags] URL")
	}
	types, err := cf.argTypes()
	if err != nil {
		return err
	}
	if duration > 0 && !flagSet(fs, "batches") {
		*batches = 0
	}
	var rows []caller.Row
	columns := []string{"$1"}
	if in.anySet() {
		src, _, closeInput, err := in.open(stdin)
		if err != nil {
			return err
		}
		defer closeInput()
		r, err := in.reader(src, cf.batchRows, types)
		if err != nil {
			return err
		}
		if rows, err = readRows(r, *batches*cf.batchRows); err != nil {
			return err
		}
		columns = r.Columns()
	}
	cfg, err := cf.config(words[0], columns, types, in.argType())
	if err != nil {
		return err
	}
	cfg.OnRetry = retryNotice(stderr)
	bench := caller.BenchConfig{Config: cfg, Batches: *batches, Duration: duration, Rows: rows}

	var report benchReport
	if *baseline {
		server, err := caller.StartBaseline()
		if err != nil {
			return err
		}
		b := bench
		b.URL = server.URL
		others := othersCPU()
		result, err := caller.Bench(ctx, b)
		if cores, ok := others(); ok {
			report.BaselineOthersCores = &cores
		}
		closeErr := server.Close()
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		if closeErr != nil {
			return closeErr
		}
		report.Baseline = &result
	}
	if report.BenchResult, err = caller.Bench(ctx, bench); err != nil {
		return refusedHint(err)
	}
	if report.Baseline != nil && report.Baseline.RowsPerSecond > 0 {
		report.Ratio = report.RowsPerSecond / report.Baseline.RowsPerSecond
	}
	if *jsonOut {
		line, err := json.Marshal(report)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", line)
		return err
	}
	if report.Baseline != nil {
		fmt.Fprintf(stdout, "baseline (in-process synchronous echo, run first)\n%s", report.Baseline.Report())
		if c := report.BaselineOthersCores; c != nil {
			fmt.Fprintf(stdout, "others        %.2f cores busy outside this process meanwhile\n", *c)
			if report.baselineSlowed() {
				fmt.Fprintf(stdout, "warning       the baseline shared the CPU with other processes (a service busy while idle?), so the ratio overstates the service\n")
			}
		}
		fmt.Fprint(stdout, "\nservice\n")
	}
	fmt.Fprint(stdout, report.Report())
	if report.Baseline != nil {
		fmt.Fprintf(stdout, "\nratio         %.3f (service rows/s / baseline rows/s)\n", report.Ratio)
	}
	return nil
}

// benchReport is the service's result, with the baseline's and the ratio of their rows
// per second when --baseline ran.
type benchReport struct {
	caller.BenchResult
	Baseline *caller.BenchResult `json:"baseline,omitempty"`
	Ratio    float64             `json:"ratio,omitempty"`
	// BaselineOthersCores is how many cores other processes kept busy while the baseline
	// ran (Linux). A service on the same machine that is busy while idle slows the
	// baseline and inflates the ratio: it once made a polling loop's 2-core service look
	// twice as fast as it was.
	BaselineOthersCores *float64 `json:"baseline_others_cores,omitempty"`
}

// baselineSlowed reports whether other processes took a quarter of a core or more from
// a baseline that ran long enough (half a second) for the count to mean it.
func (r *benchReport) baselineSlowed() bool {
	return r.BaselineOthersCores != nil && *r.BaselineOthersCores >= 0.25 && r.Baseline.ElapsedSeconds >= 0.5
}

// readRows reads up to limit rows (all when limit is 0): a load test sends the same
// rows over and over, so more would be wasted memory.
func readRows(in caller.RowReader, limit int) ([]caller.Row, error) {
	var rows []caller.Row
	for limit == 0 || len(rows) < limit {
		row, err := in.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading row %d: %w", len(rows)+1, err)
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return nil, errors.New("the input has no rows")
	}
	return rows, nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
