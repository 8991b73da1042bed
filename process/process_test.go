package process_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/caller"
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

// logBuffer is a log destination safe for the pool's goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func needPython(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed; the exec function's tests run Python scripts")
	}
}

// newPool starts a pool of the script with cfg edited by edit; it is closed at cleanup.
func newPool(t testing.TB, script string, edit func(*process.Config)) (*process.Pool, *logBuffer) {
	t.Helper()
	needPython(t)
	cfg := process.DefaultConfig()
	cfg.Name, cfg.Command = "faulty", []string{"python3", "-c", script}
	cfg.Timeout = 30 * time.Second
	if edit != nil {
		edit(&cfg)
	}
	logs := &logBuffer{}
	p, err := process.New(context.Background(), cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(context.Background()); err != nil {
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
		{`"hang"`, process.ErrTimeout, process.OutcomeTimeout, "did not answer within 3s"},
	} {
		t.Run(c.arg, func(t *testing.T) {
			t.Parallel()
			p, logs := newPool(t, faulty, func(cfg *process.Config) {
				if c.class == process.ErrTimeout {
					cfg.Timeout = 3 * time.Second
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
