// Package process serves a function from a pool of long-lived processes of any language
// (the exec kind of function): Config.Command is started Config.Processes times and kept
// running, and each batch goes to a free process as one line on its standard input, the
// Snowflake request body ({"data":[[0,arg...],[1,arg...],...]}), which answers with one
// line on its standard output, the response body ({"data":[[0,v0],[1,v1],...]}), checked
// as Snowflake checks an answer. Its standard error goes to the log, a warning a line,
// with the function's name, the process id, and the number and batch id of the call it
// serves.
//
// A process that exits, answers a line that is not a valid answer, or does not answer
// within Config.Timeout is killed with its process group and restarted in the background,
// and the batch's attempt fails with a RetryableError: a crash may be transient (memory,
// a dependency of the script), and the batch's attempts bound a script that always fails;
// once they run out the SQL user sees the last of these errors (a 422), e.g. "the function
// score failed 3 times, the most allowed; the last error: the process of function score
// (pid 4242) exited before answering; ...". A process that exits while idle is started
// again by the next batch, which does not fail for it.
//
// The Pool is a prometheus.Collector, each metric labelled with the function's name:
// asyncfn_process_requests_total by outcome, asyncfn_process_request_duration_seconds,
// and asyncfn_process_restarts_total.
//
// It runs on Unix (processes are started in process groups of their own).
package process

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/caller"
)

// Classes of a failed batch, for errors.Is on the error Call returns.
var (
	// ErrExited: the process exited, or closed its standard input or output, before it
	// answered.
	ErrExited = errors.New("process exited")
	// ErrInvalidAnswer: the process answered a line that is not a valid answer (the error
	// also matches the caller.Err* class of what is wrong with it).
	ErrInvalidAnswer = errors.New("process answered an invalid line")
	// ErrTimeout: the process did not answer within Config.Timeout.
	ErrTimeout = errors.New("process did not answer in time")
	// ErrUnavailable: no process could be started in place of one that died, or the pool
	// is closed.
	ErrUnavailable = errors.New("process unavailable")
)

// Outcomes of a request, the values of the outcome label of asyncfn_process_requests_total.
const (
	OutcomeOK          = "ok"
	OutcomeExited      = "exited"
	OutcomeInvalid     = "invalid"
	OutcomeTimeout     = "timeout"
	OutcomeCanceled    = "canceled"
	OutcomeUnavailable = "unavailable"
)

// Pool is a pool of processes serving one function; it implements asyncfn.Func.
type Pool struct {
	cfg    Config
	logger *slog.Logger
	// idle holds a slot for each of the Processes: a running process, or one that has
	// exited and is started again by the next call that takes it.
	idle  chan *proc
	calls atomic.Uint64 // numbers calls in the log
	bg    sync.WaitGroup

	mu     sync.Mutex
	closed bool
	procs  map[*proc]struct{} // started and not yet released

	requests *prometheus.CounterVec
	latency  prometheus.Histogram
	restarts prometheus.Counter
}

// serving is the call a process serves: its number in the log and its batch's id.
type serving struct {
	id      uint64
	batchID string
}

// proc is one running process.
type proc struct {
	cmd    *exec.Cmd
	pid    int
	stdin  *os.File
	stdout *os.File
	out    *bufio.Reader
	call   atomic.Pointer[serving] // the call it serves, for its standard error's log lines; nil if none
	killed atomic.Bool             // by the pool, which expects its exit
	// exited is closed once the process has exited; logged once its standard error is
	// read to the end.
	exited, logged chan struct{}
}

// New validates cfg and starts its processes. An error names the command that could not
// be started. ctx bounds the start only: the processes run until Close.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	labels := prometheus.Labels{asyncfn.LogFunction: cfg.Name}
	p := &Pool{
		cfg:    cfg,
		logger: logger.With(asyncfn.LogFunction, cfg.Name),
		idle:   make(chan *proc, cfg.Processes),
		procs:  map[*proc]struct{}{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "asyncfn_process_requests_total",
			Help:        "Batches sent to the processes of an exec function, by outcome (ok, exited, invalid, timeout, canceled, unavailable).",
			ConstLabels: labels,
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:        "asyncfn_process_request_duration_seconds",
			Help:        "Time of a batch of an exec function, from the call to the answer or the error, waiting for a free process included.",
			ConstLabels: labels,
			Buckets:     prometheus.DefBuckets,
		}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "asyncfn_process_restarts_total",
			Help:        "Processes of an exec function started in place of one that exited or was killed.",
			ConstLabels: labels,
		}),
	}
	for range cfg.Processes {
		pr, err := p.start(false)
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			p.Close(context.WithoutCancel(ctx))
			return nil, err
		}
		p.idle <- pr
	}
	return p, nil
}

// Function returns the function to register, at /Name, running Config.Processes batches
// at once (the runtime holds the others in the queue); its unset settings take the
// defaults of the binary that serves it.
func (p *Pool) Function() asyncfn.Function {
	return asyncfn.Function{Name: p.cfg.Name, Func: p, Description: p.cfg.Describe(), Concurrency: p.cfg.Processes}
}

// Describe implements prometheus.Collector.
func (p *Pool) Describe(ch chan<- *prometheus.Desc) {
	p.requests.Describe(ch)
	p.latency.Describe(ch)
	p.restarts.Describe(ch)
}

// Collect implements prometheus.Collector.
func (p *Pool) Collect(ch chan<- prometheus.Metric) {
	p.requests.Collect(ch)
	p.latency.Collect(ch)
	p.restarts.Collect(ch)
}

// Call implements asyncfn.Func: it sends the rows to a free process, waiting for one, and
// returns its answer's values.
func (p *Pool) Call(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
	began := time.Now()
	values, outcome, err := p.call(ctx, rows)
	p.requests.WithLabelValues(outcome).Inc()
	p.latency.Observe(time.Since(began).Seconds())
	if err != nil {
		return nil, err
	}
	out := make([]any, len(values))
	for i, v := range values {
		out[i] = v
	}
	return out, nil
}

func (p *Pool) call(ctx context.Context, rows []asyncfn.Row) ([]json.RawMessage, string, error) {
	line := requestLine(rows)
	var pr *proc
	select {
	case pr = <-p.idle:
	case <-ctx.Done():
		return nil, OutcomeCanceled, context.Cause(ctx)
	}
	if pr.hasExited() {
		next, err := p.start(true)
		if err != nil {
			p.idle <- pr
			return nil, OutcomeUnavailable, asyncfn.RetryableError(err)
		}
		p.release(pr)
		pr = next
	}
	id := p.calls.Add(1)
	values, outcome, err := p.exchange(ctx, pr, &serving{id, asyncfn.RequestHeader(ctx, asyncfn.HeaderBatchID)}, line, len(rows))
	if err != nil {
		p.logger.Warn("process failed a batch; restarting it", "pid", pr.pid, "call", id, "outcome", outcome, "err", err)
		p.replace(pr)
		if outcome == OutcomeCanceled {
			return nil, outcome, err
		}
		return nil, outcome, asyncfn.RetryableError(err)
	}
	p.idle <- pr
	return values, OutcomeOK, nil
}

// requestLine returns the request body of rows, numbered 0, 1, 2, ..., as one line.
func requestLine(rows []asyncfn.Row) []byte {
	args := make([]caller.Row, len(rows))
	for i, r := range rows {
		args[i] = r.Args
	}
	body := caller.EncodeRows(args)
	// Valid JSON holds a line break only as space between tokens (in strings it is
	// escaped), which a request made by hand may have inside an argument.
	if bytes.ContainsAny(body, "\r\n") {
		var compact bytes.Buffer
		_ = json.Compact(&compact, body) // valid: the arguments are
		body = compact.Bytes()
	}
	return append(body, '\n')
}

// exchange writes line to pr and reads its answer within the timeout or until ctx ends.
// On an error, pr is in an unknown state (it may still answer) and must be replaced.
func (p *Pool) exchange(ctx context.Context, pr *proc, call *serving, line []byte, rows int) ([]json.RawMessage, string, error) {
	pr.call.Store(call)
	defer pr.call.Store(nil)
	deadline := time.Now().Add(p.cfg.Timeout)
	pr.stdin.SetWriteDeadline(deadline)
	pr.stdout.SetReadDeadline(deadline)
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		pr.stdin.SetWriteDeadline(time.Now())
		pr.stdout.SetReadDeadline(time.Now())
		close(interrupted)
	})
	defer func() {
		if !stop() {
			<-interrupted // so that it cannot cut the process's next exchange short
		}
	}()

	fail := func(err error) ([]json.RawMessage, string, error) {
		switch {
		case ctx.Err() != nil:
			return nil, OutcomeCanceled, context.Cause(ctx)
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, OutcomeTimeout, &failure{ErrTimeout, err, fmt.Sprintf(
				"the process of function %s (pid %d) did not answer within %s; it was killed and is restarted.", p.cfg.Name, pr.pid, p.cfg.Timeout)}
		}
		return nil, OutcomeExited, &failure{ErrExited, err, fmt.Sprintf(
			"the process of function %s (pid %d) exited before answering; it is restarted, and its standard error is in asyncfn's log.", p.cfg.Name, pr.pid)}
	}
	// Written while the answer is read: a process that answers as it reads (cat does)
	// would otherwise block on its full standard output while asyncfn blocks on its full
	// standard input.
	written := make(chan error, 1)
	go func() {
		_, err := pr.stdin.Write(line)
		written <- err
	}()
	answer, err := readLine(pr.out, p.cfg.MaxLineBytes)
	if err != nil {
		pr.stdin.SetWriteDeadline(time.Now()) // the process may not read any more
	}
	writeErr := <-written
	switch {
	case errors.Is(err, errLineTooLong):
		return nil, OutcomeInvalid, &failure{ErrInvalidAnswer, caller.ErrTooLarge, fmt.Sprintf(
			"the process of function %s (pid %d) answered a line over %d bytes; it is restarted.", p.cfg.Name, pr.pid, p.cfg.MaxLineBytes)}
	case err != nil:
		return fail(err)
	case writeErr != nil:
		return fail(writeErr)
	}
	values, err := caller.CheckAnswer(nil, answer, rows)
	if err != nil {
		return nil, OutcomeInvalid, &failure{ErrInvalidAnswer, err, fmt.Sprintf(
			"the process of function %s (pid %d) answered a line that is not a valid answer (%s); it is restarted.", p.cfg.Name, pr.pid, err)}
	}
	return values, OutcomeOK, nil
}

// failure is a failed exchange: a sentence for the SQL user, its class and its cause.
type failure struct {
	class, cause error
	message      string
}

func (f *failure) Error() string   { return f.message }
func (f *failure) Unwrap() []error { return []error{f.class, f.cause} }

var errLineTooLong = errors.New("line too long")

// readLine reads one line, without its newline, of at most max bytes.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > max+1 { // +1 for the newline
			return nil, errLineTooLong
		}
		line = append(line, chunk...)
		switch err {
		case nil:
			return line[:len(line)-1], nil
		case bufio.ErrBufferFull:
		default:
			return nil, err
		}
	}
}

// replace kills pr, which failed an exchange, and puts a new process in its slot in the
// background, or pr itself if none can start (the next call tries again).
func (p *Pool) replace(pr *proc) {
	pr.killed.Store(true)
	// SIGKILL at once: the batch has failed, and the process has no state worth a grace
	// period, while its slot is blocked until it is gone.
	pr.signal(syscall.SIGKILL)
	p.mu.Lock()
	closed := p.closed
	if !closed {
		p.bg.Add(1) // before Close waits for bg
	}
	p.mu.Unlock()
	if closed {
		p.idle <- pr
		return
	}
	go func() {
		defer p.bg.Done()
		<-pr.exited
		next, err := p.start(true)
		if err != nil {
			if !p.isClosed() {
				p.logger.Error("could not restart a process; the next batch tries again", "err", err)
			}
			p.idle <- pr
			return
		}
		p.release(pr)
		p.idle <- next
	}()
}

// start starts a process, unless the pool is closed.
func (p *Pool) start(restart bool) (*proc, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, &failure{ErrUnavailable, nil, fmt.Sprintf("the processes of function %s are shut down.", p.cfg.Name)}
	}
	cmd := exec.Command(p.cfg.Command[0], p.cfg.Command[1:]...)
	cmd.Dir = p.cfg.Dir
	if len(p.cfg.Env) > 0 {
		cmd.Env = os.Environ()
		for k, v := range p.cfg.Env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	// A group of its own, so that signals reach the children it starts too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var files [6]*os.File // the ends of stdin, stdout and stderr: the child's, then ours
	for i := 0; i < 3; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			closeFiles(files[:])
			return nil, fmt.Errorf("function %s: %w", p.cfg.Name, err)
		}
		if i == 0 {
			files[0], files[3] = r, w
		} else {
			files[i], files[i+3] = w, r
		}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = files[0], files[1], files[2]
	err := cmd.Start()
	closeFiles(files[:3])
	if err != nil {
		closeFiles(files[3:])
		return nil, &failure{ErrUnavailable, err, fmt.Sprintf(
			"the process of function %s could not be started: %s.", p.cfg.Name, err)}
	}
	pr := &proc{
		cmd: cmd, pid: cmd.Process.Pid, stdin: files[3], stdout: files[4],
		out:    bufio.NewReaderSize(files[4], 64<<10),
		exited: make(chan struct{}), logged: make(chan struct{}),
	}
	p.procs[pr] = struct{}{}
	if restart {
		p.restarts.Inc()
	}
	p.logger.Info("process started", "pid", pr.pid, "command", p.cfg.Command)
	go p.logStderr(pr, files[5])
	go p.wait(pr)
	return pr, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

// wait reaps pr and logs how it exited, before it says so (Close returns after the log).
func (p *Pool) wait(pr *proc) {
	err := pr.cmd.Wait()
	defer close(pr.exited)
	expected := pr.killed.Load() || p.isClosed()
	status := "exit status 0"
	if err != nil {
		status = err.Error()
	}
	if expected {
		p.logger.Info("process exited", "pid", pr.pid, "status", status)
	} else {
		p.logger.Warn("process exited unexpectedly", "pid", pr.pid, "status", status)
	}
}

// logStderr logs each line pr writes to its standard error, with the call it serves,
// until all writers of it (the process and its children) are gone. A line longer than
// the buffer is logged in pieces.
func (p *Pool) logStderr(pr *proc, f *os.File) {
	defer close(pr.logged)
	defer f.Close()
	r := bufio.NewReaderSize(f, 16<<10)
	for {
		line, err := r.ReadSlice('\n')
		if text := string(bytes.TrimRight(line, "\r\n")); text != "" {
			attrs := []any{"pid", pr.pid, "line", text}
			if c := pr.call.Load(); c != nil {
				attrs = append(attrs, "call", c.id, asyncfn.LogBatchID, c.batchID)
			}
			p.logger.Warn("process standard error", attrs...)
		}
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
	}
}

func (pr *proc) hasExited() bool {
	select {
	case <-pr.exited:
		return true
	default:
		return false
	}
}

// signal sends sig to pr's process group, unless pr has exited (its group id may then
// be another's).
func (pr *proc) signal(sig syscall.Signal) {
	if !pr.hasExited() {
		syscall.Kill(-pr.pid, sig)
	}
}

// release closes the pool's ends of an exited process's standard input and output and
// forgets it. Close releases all processes, which the pool may release again.
func (p *Pool) release(pr *proc) {
	pr.stdin.Close()
	pr.stdout.Close()
	p.mu.Lock()
	delete(p.procs, pr)
	p.mu.Unlock()
}

func (p *Pool) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// Close stops the processes: SIGTERM to each process group, then SIGKILL to those still
// running after the grace period or once ctx ends. It returns when they have exited and
// their standard error is logged, or with ctx's error. Calls after Close fail with
// ErrUnavailable. Close the pool after the runtime serving it has stopped, so that no
// batch is cut short.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	procs := make([]*proc, 0, len(p.procs))
	for pr := range p.procs {
		procs = append(procs, pr)
	}
	p.mu.Unlock()
	for _, pr := range procs {
		pr.signal(syscall.SIGTERM)
	}
	grace := time.NewTimer(p.cfg.GracePeriod)
	defer grace.Stop()
	over := false
	for _, pr := range procs {
		if !over {
			select {
			case <-pr.exited:
				continue
			case <-grace.C:
			case <-ctx.Done():
			}
			over = true
		}
		if !pr.hasExited() {
			p.logger.Warn("process still running after the grace period; killing it", "pid", pr.pid, "grace_period", p.cfg.GracePeriod)
			pr.signal(syscall.SIGKILL)
		}
	}
	for _, pr := range procs {
		select {
		case <-pr.exited:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		select {
		case <-pr.logged:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	p.bg.Wait() // restarts end at once: the pool is closed
	for _, pr := range procs {
		p.release(pr)
	}
	return nil
}
