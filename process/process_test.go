package process_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/caller"
	"github.com/asyncfn/asyncfn/internal/syncbuf"
	"github.com/asyncfn/asyncfn/process"
)

// faulty answers each row with its first argument, unless a row asks it to misbehave:
// "crash" exits after a line on standard error, "garbage" answers a line that is not
// JSON, "short" answers no rows, "hang" never answers, "slow" answers after 200ms,
// "pid" answers its process id.
const faulty = `
import json, os, sys, time
for line in sys.stdin:
    rows = json.loads(line)["data"]
    args = [r[1] if len(r) > 1 else None for r in rows]
    if "crash" in args:
        print("crashing on purpose", file=sys.stderr, flush=True)
        sys.exit(3)
    if "garbage" in args:
        print("hello, world", flush=True)
        continue
    if "short" in args:
        print('{"data":[]}', flush=True)
        continue
    if "hang" in args:
        time.sleep(3600)
    if "slow" in args:
        time.sleep(0.2)
    if "pid" in args:
        args = [os.getpid() for _ in args]
    print(json.dumps({"data": [[r[0], a] for r, a in zip(rows, args)]}), flush=True)
`

// hangingShell answers one-row batches with its process id, but hangs on "hang".
const hangingShell = `while read -r line; do
  case "$line" in *hang*) sleep 3600 ;; esac
  echo "{\"data\":[[0,$$]]}"
done`

func needPython(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed; the exec function's tests run Python scripts")
	}
}

// newPool starts a pool of the script with cfg edited by edit; it is closed at cleanup.
func newPool(t testing.TB, script string, edit func(*process.Config)) (*process.Pool, *syncbuf.Buffer) {
	t.Helper()
	needPython(t)
	cfg := process.DefaultConfig()
	cfg.Name, cfg.Command = "faulty", []string{"python3", "-c", script}
	cfg.Timeout = 30 * time.Second
	if edit != nil {
		edit(&cfg)
	}
	logs := &syncbuf.Buffer{}
	p, err := process.New(context.Background(), cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // fail, not hang
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return p, logs
}

func rowsOf(args ...string) []asyncfn.Row {
	rows := make([]asyncfn.Row, len(args))
	for i, a := range args {
		rows[i] = asyncfn.Row{Number: i, Args: []json.RawMessage{json.RawMessage(a)}}
	}
	return rows
}

// values returns a call's values as JSON text.
func values(t *testing.T, out []any) []string {
	t.Helper()
	s := make([]string, len(out))
	for i, v := range out {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		s[i] = string(b)
	}
	return s
}

// gather returns the pool's counters, and its histogram's count, by name and labels.
func gather(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += fmt.Sprintf("{%s=%q}", l.GetName(), l.GetValue())
			}
			if h := m.GetHistogram(); h != nil {
				out[name] = float64(h.GetSampleCount())
			} else {
				out[name] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// TestEcho: the rows reach the process as one request line and its answer's values come
// back as sent, an argument spread over lines by hand included.
func TestEcho(t *testing.T) {
	t.Parallel()
	p, _ := newPool(t, faulty, nil)
	args := []string{`"a"`, `null`, `"é \"quoted\" \n newline"`, `{"k": [1,` + "\n\r\t" + `2]}`, `12345678901234567890`}
	out, err := p.Call(context.Background(), rowsOf(args...))
	if err != nil {
		t.Fatal(err)
	}
	// As json.dumps writes them: the values are the answer's text, unchanged.
	want := []string{`"a"`, `null`, `"\u00e9 \"quoted\" \n newline"`, `{"k":[1,2]}`, `12345678901234567890`}
	if got := values(t, out); !reflect.DeepEqual(got, want) {
		t.Errorf("values %q, want %q", got, want)
	}
}

// TestFailures: a process that crashes, answers garbage or the wrong rows, or hangs
// fails its batch with a retryable error of its class, is restarted, and the next batch
// is served.
func TestFailures(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		arg     string
		class   error
		outcome string
		message string
	}{
		{`"crash"`, process.ErrExited, process.OutcomeExited, "exited before answering"},
		{`"garbage"`, caller.ErrInvalidJSON, process.OutcomeInvalid, "answered a line that is not a valid answer (the answer is not valid JSON"},
		{`"short"`, caller.ErrRowCount, process.OutcomeInvalid, "(2 rows were sent, 0 came back)"},
		{`"hang"`, process.ErrTimeout, process.OutcomeTimeout, "did not answer within 1s"},
	} {
		t.Run(c.arg, func(t *testing.T) {
			t.Parallel()
			p, logs := newPool(t, faulty, func(cfg *process.Config) {
				if c.class == process.ErrTimeout {
					// sh, which starts at once however busy the machine, so that the
					// timeout can be short; the hung sleep is a child, which must be
					// killed with it for Close to see its standard error end.
					cfg.Command = []string{"sh", "-c", hangingShell}
					cfg.Timeout = time.Second
				}
			})
			before, err := p.Call(context.Background(), rowsOf(`"pid"`))
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.Call(context.Background(), rowsOf(`"x"`, c.arg))
			e := asyncfn.AsError(err)
			if err == nil || e.Kind != asyncfn.Retryable || !errors.Is(err, c.class) || !strings.Contains(e.Message, c.message) {
				t.Fatalf("error %v (kind %s), want a retryable %v saying %q", err, e.Kind, c.class, c.message)
			}
			if c.class != process.ErrExited && c.class != process.ErrTimeout && !errors.Is(err, process.ErrInvalidAnswer) {
				t.Errorf("error %v is not an ErrInvalidAnswer", err)
			}
			after, err := p.Call(context.Background(), rowsOf(`"pid"`))
			if err != nil {
				t.Fatalf("the batch after: %v", err)
			}
			if values(t, before)[0] == values(t, after)[0] {
				t.Errorf("the same process (pid %v) served the batch after", before[0])
			}
			if c.arg == `"crash"` && !strings.Contains(logs.String(), "crashing on purpose") {
				t.Errorf("the standard error is not logged:\n%s", logs)
			}
			want := map[string]float64{
				`asyncfn_process_requests_total{function="faulty"}{outcome="ok"}`:                2,
				`asyncfn_process_requests_total{function="faulty"}{outcome="` + c.outcome + `"}`: 1,
				`asyncfn_process_request_duration_seconds{function="faulty"}`:                    3,
				`asyncfn_process_restarts_total{function="faulty"}`:                              1,
			}
			if got := gather(t, p); !reflect.DeepEqual(got, want) {
				t.Errorf("metrics %v, want %v", got, want)
			}
		})
	}
}

// TestCanceled: a batch whose context ends fails with the context's error, not a
// retryable one (the runtime decides), and its process is replaced.
func TestCanceled(t *testing.T) {
	t.Parallel()
	p, _ := newPool(t, hangingShell, func(cfg *process.Config) { cfg.Command = []string{"sh", "-c", hangingShell} })
	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("shutting down")
	time.AfterFunc(100*time.Millisecond, func() { cancel(cause) })
	if _, err := p.Call(ctx, rowsOf(`"hang"`)); err != cause {
		t.Fatalf("error %v, want %v", err, cause)
	}
	if _, err := p.Call(context.Background(), rowsOf(`"x"`)); err != nil {
		t.Fatalf("the batch after: %v", err)
	}
	got := gather(t, p)
	if got[`asyncfn_process_requests_total{function="faulty"}{outcome="canceled"}`] != 1 || got[`asyncfn_process_restarts_total{function="faulty"}`] != 1 {
		t.Errorf("metrics %v", got)
	}
}

// TestExitAtStart: a process that exits as it starts fails each batch with its class,
// its standard error logged, and is started again for each.
func TestExitAtStart(t *testing.T) {
	t.Parallel()
	p, logs := newPool(t, `import sys; sys.exit("no model file")`, nil)
	for range 2 {
		_, err := p.Call(context.Background(), rowsOf(`"a"`))
		if e := asyncfn.AsError(err); !errors.Is(err, process.ErrExited) || e.Kind != asyncfn.Retryable {
			t.Fatalf("error %v, want a retryable ErrExited", err)
		}
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "no model file"); n < 2 {
		t.Errorf("standard error logged %d times, want 2 or 3:\n%s", n, logs)
	}
	if got := gather(t, p)[`asyncfn_process_restarts_total{function="faulty"}`]; got < 1 {
		t.Errorf("%v restarts", got)
	}
}

// TestCommandNotFound: New fails naming the command that cannot start.
func TestCommandNotFound(t *testing.T) {
	t.Parallel()
	cfg := process.DefaultConfig()
	cfg.Name, cfg.Command = "missing", []string{"asyncfn-no-such-command", "arg"}
	_, err := process.New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if !errors.Is(err, process.ErrUnavailable) || !strings.Contains(err.Error(), "asyncfn-no-such-command") {
		t.Fatalf("error %v, want one naming the command", err)
	}
}

// TestConcurrency: with two processes, two batches run at once (each waits for the
// other to arrive), and more batches than processes wait for a free one.
func TestConcurrency(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const meet = `
import json, os, sys, time
for line in sys.stdin:
    rows = json.loads(line)["data"]
    if rows[0][1] == "meet":
        open(os.path.join(os.environ["MEET"], str(os.getpid())), "w").close()
        while len(os.listdir(os.environ["MEET"])) < 2:
            time.sleep(0.01)
    print(json.dumps({"data": [[0, os.getpid()]]}), flush=True)
`
	p, _ := newPool(t, meet, func(cfg *process.Config) {
		cfg.Processes, cfg.Env = 2, map[string]string{"MEET": dir}
	})
	args := []string{`"meet"`, `"meet"`, `"x"`, `"x"`, `"x"`, `"x"`}
	pids := make([]string, len(args))
	var wg sync.WaitGroup
	for i, a := range args {
		wg.Go(func() {
			out, err := p.Call(context.Background(), rowsOf(a))
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := json.Marshal(out[0])
			pids[i] = string(b)
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	distinct := map[string]bool{}
	for _, pid := range pids {
		distinct[pid] = true
	}
	if pids[0] == pids[1] || len(distinct) != 2 {
		t.Errorf("process ids %v: want the two meeting batches in two processes, and two in all", pids)
	}
}

// TestCloseGrace: Close gives the processes SIGTERM and the grace period, then kills one
// that ignores it; calls after Close fail.
func TestCloseGrace(t *testing.T) {
	t.Parallel()
	const stubborn = `
import json, os, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
for line in sys.stdin:
    print(json.dumps({"data": [[0, os.getpid()]]}), flush=True)
`
	const grace = 300 * time.Millisecond
	p, logs := newPool(t, stubborn, func(cfg *process.Config) { cfg.GracePeriod = grace })
	out, err := p.Call(context.Background(), rowsOf(`"pid"`)) // SIGTERM is ignored from now
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took < grace {
		t.Errorf("Close returned after %s, before the grace period of %s", took, grace)
	}
	if !strings.Contains(logs.String(), "killing it") || !strings.Contains(logs.String(), "signal: killed") {
		t.Errorf("no kill logged:\n%s", logs)
	}
	pid, err := strconv.Atoi(string(out[0].(json.RawMessage)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("process %s still runs", out[0])
	}
	if _, err := p.Call(context.Background(), rowsOf(`"a"`)); !errors.Is(err, process.ErrUnavailable) {
		t.Errorf("call after Close: %v, want ErrUnavailable", err)
	}
}

// TestCloseTerminates: processes that exit on SIGTERM are not killed.
func TestCloseTerminates(t *testing.T) {
	t.Parallel()
	p, logs := newPool(t, faulty, func(cfg *process.Config) { cfg.Processes, cfg.GracePeriod = 2, time.Minute })
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "killing it") || strings.Count(logs.String(), "process exited") != 2 {
		t.Errorf("want two processes exited on SIGTERM:\n%s", logs)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for field, edit := range map[string]func(*process.Config){
		"name":           func(c *process.Config) { c.Name = "" },
		"command":        func(c *process.Config) { c.Command = []string{""} },
		"processes":      func(c *process.Config) { c.Processes = 0 },
		"timeout":        func(c *process.Config) { c.Timeout = 0 },
		"grace-period":   func(c *process.Config) { c.GracePeriod = -time.Second },
		"max-line-bytes": func(c *process.Config) { c.MaxLineBytes = caller.MaxAnswerBytes + 1 },
		"env":            func(c *process.Config) { c.Env = map[string]string{"A=B": "secret"} },
	} {
		cfg := process.DefaultConfig()
		cfg.Name, cfg.Command = "f", []string{"true"}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		edit(&cfg)
		var fe *process.FieldError
		if err := cfg.Validate(); !errors.As(err, &fe) || fe.Field != field || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: error %v", field, err)
		}
	}
}

// TestLineTooLong: an answer line over MaxLineBytes fails the batch.
func TestLineTooLong(t *testing.T) {
	t.Parallel()
	p, _ := newPool(t, faulty, func(cfg *process.Config) { cfg.MaxLineBytes = 100 })
	if _, err := p.Call(context.Background(), rowsOf(`"`+strings.Repeat("x", 100)+`"`)); !errors.Is(err, process.ErrInvalidAnswer) || !errors.Is(err, caller.ErrTooLarge) {
		t.Fatalf("error %v, want ErrInvalidAnswer", err)
	}
	if _, err := p.Call(context.Background(), rowsOf(`"short enough"`)); err != nil {
		t.Fatal(err)
	}
}

// TestAnswerWhileReading: a process that answers as it reads (cat echoes the request
// line, a valid answer for rows of one argument) gets a batch larger than the pipes'
// buffers without a deadlock.
func TestAnswerWhileReading(t *testing.T) {
	t.Parallel()
	p, _ := newPool(t, "", func(cfg *process.Config) { cfg.Command = []string{"cat"} })
	var rows []asyncfn.Row
	for i, args := range caller.SyntheticRows(4096) {
		rows = append(rows, asyncfn.Row{Number: i, Args: args})
	}
	out, err := p.Call(context.Background(), rows)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(rows) || string(out[4095].(json.RawMessage)) != string(rows[4095].Args[0]) {
		t.Errorf("%d values, the last %s", len(out), out[len(out)-1])
	}
}

// TestDirAndEnv: the processes run in Dir with Env added to their environment, whose
// values are not logged.
func TestDirAndEnv(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p, logs := newPool(t, "", func(cfg *process.Config) {
		cfg.Command = []string{"sh", "-c", `while read -r line; do echo "{\"data\":[[0,\"$(pwd) $TOKEN\"]]}"; done`}
		cfg.Dir, cfg.Env = dir, map[string]string{"TOKEN": "s3cret"}
	})
	out, err := p.Call(context.Background(), rowsOf(`"a"`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(out[0].(json.RawMessage)), `"`+dir+` s3cret"`; got != want {
		t.Errorf("answer %s, want %s", got, want)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "s3cret") {
		t.Errorf("the secret is logged:\n%s", logs)
	}
}

var discard = slog.New(slog.DiscardHandler)

// TestStandardErrorNamesTheBatch: a line a process writes on its standard error while it
// serves a batch is logged with the batch's id, for the data team to find the batch.
func TestStandardErrorNamesTheBatch(t *testing.T) {
	t.Parallel()
	p, logs := newPool(t, "", func(cfg *process.Config) {
		// Writes its line, then hangs until killed at the timeout: the line is read
		// while the call is on, however busy the machine.
		cfg.Command = []string{"sh", "-c", `read -r line; echo "scoring went wrong" >&2; sleep 3600`}
		cfg.Timeout = 2 * time.Second
	})
	ctx := asyncfn.WithHeaders(context.Background(), map[string]string{asyncfn.HeaderBatchID: "batch-7f3a"})
	if _, err := p.Call(ctx, rowsOf(`"x"`)); !errors.Is(err, process.ErrTimeout) {
		t.Fatalf("error %v, want the timeout", err)
	}
	// The process's command holds the same words, and the restarted process's start
	// is logged with it: look for the line as the standard error's log gives it.
	var line string
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, `line="scoring went wrong"`) {
			line = l
		}
	}
	if !strings.Contains(line, asyncfn.LogBatchID+"=batch-7f3a") {
		t.Errorf("the standard error's line %q does not name the batch; logs:\n%s", line, logs)
	}
}
