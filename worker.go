package asyncfn

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/asyncfn/asyncfn/internal/budget"
	"github.com/asyncfn/asyncfn/internal/wait"
)

// PoolConfig tunes a worker pool. DefaultPoolConfig gives the defaults.
type PoolConfig struct {
	// ID names this pool as the owner of its leases. Default host:pid:random.
	ID string
	// Concurrency caps the batches running at once in this pool. Default 2 x GOMAXPROCS.
	Concurrency int
	// Lease is how long a claim lasts without a heartbeat; heartbeats extend it every
	// third of it. A dead worker's batch is taken by another after at most this long.
	// Default 30s.
	Lease time.Duration
	// PollInterval is how often an idle pool looks for work when no event woke it (a
	// backoff ending, or another process's batch on a store that does not notify).
	// Default 1s.
	PollInterval time.Duration
	// ShutdownTimeout is how long Stop lets running batches finish before it cancels them
	// and hands them back to the queue. Default 30s.
	ShutdownTimeout time.Duration
	// Observer is told when batches start and finish (metrics, status page). Default nil:
	// none.
	Observer Observer
}

// DefaultPoolConfig returns the documented defaults.
func DefaultPoolConfig() PoolConfig {
	return PoolConfig{
		ID:              defaultOwnerID(),
		Concurrency:     2 * runtime.GOMAXPROCS(0),
		Lease:           30 * time.Second,
		PollInterval:    time.Second,
		ShutdownTimeout: 30 * time.Second,
	}
}

// Validate returns an error naming the first bad field.
func (c PoolConfig) Validate() error {
	switch {
	case c.ID == "":
		return errors.New("worker id must not be empty")
	case c.Concurrency <= 0:
		return errors.New("worker concurrency must be positive")
	case c.Lease < 3*time.Millisecond:
		return errors.New("lease must be at least 3ms")
	case c.PollInterval <= 0:
		return errors.New("poll interval must be positive")
	case c.ShutdownTimeout < 0:
		return errors.New("shutdown timeout must not be negative")
	}
	return nil
}

func defaultOwnerID() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s:%d:%x", host, os.Getpid(), b)
}

// Pool runs functions on the batches it claims from the store.
//
// Shutdown order (Stop): stop claiming; let running batches finish for up to
// ShutdownTimeout; cancel those still running and hand them back to the queue without
// counting the attempt; return. Leases keep being extended until each batch has ended.
type Pool struct {
	store    Store
	registry *Registry
	hub      *hub
	logger   *slog.Logger
	cfg      PoolConfig
	now      func() time.Time
	obs      Observer

	slots   chan struct{}            // global concurrency
	perFunc map[string]chan struct{} // per-function concurrency, where set
	freed   chan struct{}            // a slot was released
	// unstored caps the bytes held by batches run before they were stored whose
	// outcome is still to store: their payloads and results.
	unstored *budget.Budget

	claims    loop
	running   sync.WaitGroup
	runCtx    context.Context // cancelled when the shutdown deadline passes
	cancelRun context.CancelFunc
	stopOnce  sync.Once
	// mu orders reserve against Stop: no reservation is taken once Stop waits.
	mu       sync.Mutex
	stopping bool
}

// newPool returns a pool that runs the functions in registry on batches from store.
func newPool(store Store, registry *Registry, events *hub, logger *slog.Logger, cfg PoolConfig) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Pool{
		store: store, registry: registry, hub: events, logger: logger.With("worker", cfg.ID), cfg: cfg, now: time.Now,
		obs:      observerOrNop(cfg.Observer),
		slots:    make(chan struct{}, cfg.Concurrency),
		perFunc:  map[string]chan struct{}{},
		freed:    make(chan struct{}, 1),
		unstored: budget.New(unstoredBytes),
	}
	for _, name := range registry.Names() {
		if fn, _ := registry.Lookup(name); fn.Concurrency > 0 {
			p.perFunc[name] = make(chan struct{}, fn.Concurrency)
		}
	}
	p.runCtx, p.cancelRun = context.WithCancel(context.Background())
	return p, nil
}

// Start claims and runs batches in the background until Stop.
func (p *Pool) Start(ctx context.Context) {
	p.claims.start(ctx, p.claimLoop)
}

// Stop shuts the pool down in the order documented on Pool. It is safe to call more than
// once.
func (p *Pool) Stop() {
	p.stopOnce.Do(func() {
		p.mu.Lock()
		p.stopping = true
		p.mu.Unlock()
		p.claims.stop()
		finished := make(chan struct{})
		go func() { p.running.Wait(); close(finished) }()
		t := time.NewTimer(p.cfg.ShutdownTimeout)
		defer t.Stop()
		select {
		case <-finished:
		case <-t.C:
			p.logger.Warn("shutdown timeout: handing running batches back to the queue")
			p.cancelRun()
			<-finished
		}
		p.cancelRun()
	})
}

// Process claims the batch at key and runs it to the end, for a worker told which batch
// to run (an AWS Lambda event). A batch that is already running, waiting for a retry or
// finished is left alone and Process returns nil: events may be delivered twice.
func (p *Pool) Process(ctx context.Context, key Key) error {
	if _, ok := p.registry.Lookup(key.Function); !ok {
		return ErrUnknownFunction
	}
	b, err := p.store.ClaimKey(ctx, key, ClaimParams{Owner: p.cfg.ID, Now: p.now(), Lease: p.cfg.Lease, Limit: 1})
	if errors.Is(err, ErrNotClaimable) || errors.Is(err, ErrNotFound) {
		p.logger.Info("batch not claimable; nothing to do", LogFunction, key.Function, LogBatchID, key.BatchID, "reason", err)
		return nil
	}
	if err != nil {
		return err
	}
	p.running.Add(1)
	p.run(ctx, b, nil, nil, nil, func() {})
	return nil
}

func (p *Pool) claimLoop(ctx context.Context) {
	wake, unsubscribe := p.hub.Queued()
	defer unsubscribe()
	ticker := time.NewTicker(p.cfg.PollInterval)
	defer ticker.Stop()
	var backoff time.Duration
	// backlog: batches may be queued that no claim has found yet (a batch was queued, a
	// claim came back full, the store may hold work of other processes). A slot freed
	// without a backlog is no news: a batch run at once frees its slot, and a claim per
	// batch then would cost a store transaction that finds nothing.
	backlog := true
	for {
		more, starved, err := p.claimOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// A store that fails (full disk, outage) is asked again only after a growing
			// pause, whatever wakes the loop: each try costs a transaction, and new
			// batches and freed slots would otherwise make it a hot loop.
			backoff = min(max(2*backoff, claimBackoffMin), claimBackoffMax)
			p.logger.Warn("claiming batches failed; trying again later", "err", err, "retry_in", backoff)
			if !wait.Sleep(ctx, backoff) {
				return
			}
			continue
		}
		backoff = 0
		if more {
			continue
		}
		backlog = starved
		for !p.news(ctx, wake, ticker.C, backlog) {
		}
		if ctx.Err() != nil {
			return
		}
		backlog = true
	}
}

// news waits for a reason to claim: a batch queued, the poll interval, or a slot freed
// while backlog says batches may be waiting for one. It reports false for a slot freed
// without a backlog, and true when ctx is done.
func (p *Pool) news(ctx context.Context, wake <-chan struct{}, tick <-chan time.Time, backlog bool) bool {
	select {
	case <-ctx.Done():
	case <-wake:
	case <-tick:
	case <-p.freed:
		return backlog
	}
	return true
}

// claimOnce claims as many batches as there are free slots and starts them, and reports
// whether there may be more to claim: a claim came back with all it asked for. A claim
// that found fewer took all there was, and the loop waits for news (a batch queued, a
// slot freed) rather than pay a transaction to find nothing. starved reports that a
// function could not be claimed for lack of free slots, so that a slot freed is news.
// Functions with a concurrency of their own are claimed separately so that none gets
// more batches than it may run.
func (p *Pool) claimOnce(ctx context.Context) (more, starved bool, err error) {
	free := cap(p.slots) - len(p.slots)
	if free == 0 {
		return false, true, nil
	}
	var unlimited []string
	started := 0
	for _, name := range p.registry.Names() {
		sem, limited := p.perFunc[name]
		if !limited {
			unlimited = append(unlimited, name)
			continue
		}
		n, held, err := p.claimAndStart(ctx, []string{name}, min(free-started, cap(sem)-len(sem)))
		started, more, starved = started+n, more || held > 0 && n == held, starved || held == 0
		if err != nil {
			return more, starved, err
		}
	}
	if len(unlimited) > 0 {
		n, held, err := p.claimAndStart(ctx, unlimited, free-started)
		more, starved = more || held > 0 && n == held, starved || held == 0
		if err != nil {
			return more, starved, err
		}
	}
	return more, starved, nil
}

// claimAndStart claims up to limit batches of functions and starts them: n of the held
// slots it could take for them (it got all it asked for if n == held > 0; none held: no
// slot was free).
func (p *Pool) claimAndStart(ctx context.Context, functions []string, limit int) (n, held int, err error) {
	// The slots are taken before the claim, so that every batch claimed starts at once
	// under its heartbeat: a slot taken meanwhile by a batch run at once would otherwise
	// leave a claimed batch waiting while its lease runs out, and another worker run it.
	limited := ""
	if len(functions) == 1 && p.perFunc[functions[0]] != nil {
		limited = functions[0]
	}
	held = p.takeSlots(limited, limit)
	if held == 0 {
		return 0, 0, nil
	}
	batches, err := p.store.Claim(ctx, ClaimParams{Owner: p.cfg.ID, Now: p.now(), Lease: p.cfg.Lease, Limit: held, Functions: functions})
	if err != nil {
		batches = nil // not known to be durable: running them could run each any number of times
	}
	for range held - len(batches) {
		p.unhold(limited) // not news for the claim loop, which would wake to claim again
	}
	if err != nil {
		return 0, held, err
	}
	for _, b := range batches {
		p.running.Add(1)
		go p.run(p.runCtx, b, nil, nil, nil, func() { p.release(b.Key.Function) })
	}
	return len(batches), held, nil
}

// takeSlots takes up to n free worker slots without waiting, and as many of function's
// own slots if it has a concurrency of its own (function ""; none), and returns how many.
func (p *Pool) takeSlots(function string, n int) int {
	sem := p.perFunc[function]
	for taken := range n {
		select {
		case p.slots <- struct{}{}:
		default:
			return taken
		}
		if sem != nil {
			select {
			case sem <- struct{}{}:
			default:
				<-p.slots
				return taken
			}
		}
	}
	return max(n, 0)
}

// The pause after a failed claim doubles from claimBackoffMin up to claimBackoffMax.
const (
	claimBackoffMin = 100 * time.Millisecond
	claimBackoffMax = 10 * time.Second
)

// release frees a slot of function's and wakes the claim loop.
func (p *Pool) release(function string) {
	p.unhold(function)
	select {
	case p.freed <- struct{}{}:
	default:
	}
}

// unhold frees a slot of function's.
func (p *Pool) unhold(function string) {
	if sem := p.perFunc[function]; sem != nil {
		<-sem
	}
	<-p.slots
}

// finish records an attempt's outcome, trying again while the store is unavailable until
// ctx ends, so that a result is not thrown away, and its attempt lost, for a blip. Trying
// late is safe: Finish changes nothing once the lease has passed to another worker
// (ErrLeaseLost).
func (p *Pool) finish(ctx context.Context, key Key, fp FinishParams, log *slog.Logger) error {
	return untilAvailable(ctx, func() error { return p.store.Finish(ctx, key, p.cfg.ID, fp) }, log)
}

// record stores the end of an attempt with finish, for a batch run before it was stored
// (first, nil for others) together with the batch.
func (p *Pool) record(ctx context.Context, key Key, first *firstRun, fp FinishParams, log *slog.Logger) error {
	finish := func() error { return p.finish(ctx, key, fp, log) }
	if first == nil {
		return finish()
	}
	return first.record(ctx, fp, finish, log)
}

// untilAvailable calls write, and again after a growing pause while it fails with
// ErrUnavailable (a restart, a failover, a dropped connection), until ctx ends.
func untilAvailable(ctx context.Context, write func() error, log *slog.Logger) error {
	backoff := 50 * time.Millisecond
	for {
		err := write()
		if !errors.Is(err, ErrUnavailable) {
			return err
		}
		log.Warn("could not record the outcome of a batch; trying again", "err", err, "retry_in", backoff)
		if !wait.Sleep(ctx, backoff) {
			return err
		}
		backoff = min(2*backoff, time.Second)
	}
}

// reservation is a worker slot held for a batch that the front end of this process is
// about to create claimed by the pool, so that it runs at once.
type reservation struct {
	pool     *Pool
	function string
}

// reserve holds a worker slot for a batch of function, waiting for one to be free until
// ctx is done; it returns nil then, or if the pool is stopping. The caller must Run or
// Cancel the reservation.
func (p *Pool) reserve(ctx context.Context, function string) *reservation {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil
	}
	if sem := p.perFunc[function]; sem != nil {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			<-p.slots
			return nil
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		p.release(function)
		return nil
	}
	p.running.Add(1)
	return &reservation{pool: p, function: function}
}

// Lease marks b as claimed by the pool, as Claim would, for Store.Create.
func (r *reservation) Lease(b *Batch) {
	b.State, b.Owner, b.Attempts = Running, r.pool.cfg.ID, 1
	b.StartedAt, b.LeaseUntil = b.CreatedAt, b.CreatedAt.Add(r.pool.cfg.Lease)
}

// Run runs the batch on the reserved slot in the background, from its rows, and hands the
// end of its attempt to answer. The batch is created, or first (not nil) stores it.
func (r *reservation) Run(b *Batch, rows []Row, answer *handoff, first *firstRun) {
	go r.pool.run(r.pool.runCtx, b, rows, answer, first, func() { r.pool.release(r.function) })
}

// Cancel gives the slot back: the batch was not created.
func (r *reservation) Cancel() {
	r.pool.release(r.function)
	r.pool.running.Done()
}

// run runs one claimed batch to the end of its attempt and records the outcome. ctx is
// cancelled when the pool gives up waiting at shutdown. It calls free, which gives back
// the batch's worker slot, once the function has returned: the slot may take the next
// batch while the outcome is written, a wait for the store's commit. A batch run at once
// hands its outcome to the waiting POST (answer, nil for others) before writing it; one
// run before it is stored (first, nil for others) is stored with its outcome.
func (p *Pool) run(ctx context.Context, b *Batch, rows []Row, answer *handoff, first *firstRun, free func()) {
	defer p.running.Done()
	if first != nil {
		defer first.letGo() // a panic: the key's other requests need not wait for a batch never stored
	}
	freed := false
	defer func() {
		if !freed { // a panic before the function returned
			free()
		}
	}()
	log := p.logger.With(LogFunction, b.Key.Function, LogBatchID, b.Key.BatchID, LogQueryID, b.QueryID, "attempt", b.Attempts)
	fn, _ := p.registry.Lookup(b.Key.Function) // claims name registered functions only
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	info := startInfo(b)
	p.obs.BatchStarted(info)
	stopHeartbeat := p.heartbeat(runCtx, b.Key, first, cancel, log)
	began := time.Now()
	var fail *Error
	var result []byte
	var cp *checkpointer
	if rows == nil {
		var err error
		if rows, err = ParseRows(b.Payload); err != nil {
			fail = AsError(err)
		}
	}
	if fail == nil {
		callCtx := runCtx
		if fn.Checkpoint.Enabled() {
			cp = p.newCheckpointer(runCtx, b, fn.Checkpoint, rows, cancel, log)
			callCtx = WithRowDone(runCtx, cp.rowDone)
		}
		result, fail = p.call(callCtx, fn, b, rows)
		if cp != nil {
			cp.stop()
		}
	}
	stopHeartbeat()
	if first != nil {
		// The slot goes back before the batch is stored, and nothing else waits for the
		// store then: past unstoredBytes of batches to store, the slot waits, and the
		// POSTs with it, rather than memory fill with batches run faster than stored.
		held := int64(len(first.payload) + len(result) + unstoredOverhead)
		p.unstored.Take(held)
		defer p.unstored.Give(held)
	}
	freed = true
	free()
	info.Run, info.Outcome, info.Error = time.Since(began), OutcomeLost, fail

	// The outcome, and the rows saved before it, must be recorded even when shutdown
	// has cancelled ctx.
	storeCtx, cancelStore := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancelStore()
	now := p.now()
	var finish FinishParams
	switch {
	case errors.Is(context.Cause(runCtx), ErrLeaseLost):
		log.Warn("lease lost while running; another worker owns the batch now")
		p.obs.BatchFinished(info)
		return
	case ctx.Err() != nil && fail != nil:
		finish = HandBack(now, now)
		log.Warn("shutting down: batch handed back to the queue")
	case fail == nil:
		finish = Succeed(now, result)
	case fail.Kind == Retryable && b.Attempts < b.MaxAttempts:
		finish = Retry(now, fail, now.Add(fn.BackoffFor(b.Attempts+1)))
		log.Warn("retryable error; batch requeued", "err", fail.Message, "retry_at", finish.RunAfter)
	case fail.Kind == Retryable:
		times := "once"
		if b.Attempts != 1 {
			times = fmt.Sprintf("%d times", b.Attempts)
		}
		finish = Fail(now, &Error{Kind: Internal, Message: fmt.Sprintf(
			"the function %s failed %s, the most allowed; the last error: %s", b.Key.Function, times, fail.Message)})
	default:
		finish = Fail(now, fail)
	}
	if cp != nil && !finish.Outcome.Final() {
		cp.flush(storeCtx) // the next attempt starts from there
	}
	answered := answer != nil && answer.take()
	if answered && finish.Outcome.Final() {
		finish.GraceUntil = now.Add(answer.grace)
		storeCtx = Unawaited(storeCtx)
	}
	done := Finished(b, finish)
	done.Payload = nil
	if answered {
		p.finished(&info, b, finish)
		answer.send(done)
	}
	if err := p.record(storeCtx, b.Key, first, finish, log); err != nil {
		log.Error("could not record the outcome of a batch; it will run again when its lease expires", "err", err)
		if !answered {
			p.obs.BatchFinished(info)
		}
		return
	}
	if !answered {
		p.finished(&info, b, finish) // before publishing, so a waiting client sees it counted
	}
	if !finish.Outcome.Final() {
		p.hub.Publish(Event{Key: b.Key, State: Queued})
		return
	}
	p.hub.Publish(Event{Key: b.Key, State: done.State, Batch: done})
	if finish.Error != nil {
		log.Warn("batch failed", "kind", finish.Error.Kind, "err", finish.Error.Message, "duration", time.Since(began))
	} else {
		log.Info("batch succeeded", "rows", b.Rows, "duration", time.Since(began))
	}
}

// finished tells the observer of the end of b's attempt with outcome f.
func (p *Pool) finished(info *RunInfo, b *Batch, f FinishParams) {
	info.Outcome, info.Error = f.Outcome, f.Error
	if f.Outcome.Final() {
		info.Total = f.Now.Sub(b.CreatedAt)
	}
	p.obs.BatchFinished(*info)
}

// call runs the function on the batch's rows not saved yet (b.Saved) within its timeout
// and returns the encoded result of all rows or the error to store. A panic becomes an
// Internal error. A function that ignores its context past the timeout is abandoned (its
// goroutine runs on) so that the batch still fails in time.
func (p *Pool) call(ctx context.Context, fn Function, b *Batch, rows []Row) ([]byte, *Error) {
	todo := unsaved(rows, b.Saved)
	callCtx, cancel := context.WithTimeout(ctx, fn.Timeout)
	defer cancel()
	type outcome struct {
		values []any
		err    error
	}
	done := make(chan outcome, 1)
	if len(todo) == 0 {
		done <- outcome{values: []any{}}
	} else {
		go func() {
			defer func() {
				if r := recover(); r != nil {
					p.logger.Error("function panicked", LogFunction, fn.Name, LogBatchID, b.Key.BatchID, "panic", r, "stack", string(debug.Stack()))
					done <- outcome{err: &Error{Kind: Internal, Message: fmt.Sprintf("the function %s panicked: %v.", fn.Name, r)}}
				}
			}()
			values, err := fn.Func.Call(WithHeaders(callCtx, b.Headers), todo)
			done <- outcome{values, err}
		}()
	}
	var out outcome
	select {
	case out = <-done:
	case <-callCtx.Done():
		out.err = callCtx.Err()
	}
	if out.err != nil {
		if errors.Is(out.err, context.DeadlineExceeded) && ctx.Err() == nil {
			return nil, &Error{Kind: Internal, Message: fmt.Sprintf("the function %s did not finish within its timeout of %s.", fn.Name, fn.Timeout)}
		}
		return nil, AsError(out.err)
	}
	all, values := todo, out.values
	if len(todo) < len(rows) && len(values) == len(todo) {
		all, values = rows, withSaved(rows, b.Saved, values)
	}
	result, err := EncodeResult(all, values)
	if err != nil {
		return nil, &Error{Kind: Internal, Message: err.Error() + "."}
	}
	return result, nil
}

// heartbeat extends the lease every third of its length until stopped; if the lease is
// lost it cancels the run with ErrLeaseLost. A batch run before it is stored (first, nil
// for others) has no lease to extend until it is stored.
func (p *Pool) heartbeat(ctx context.Context, key Key, first *firstRun, cancel context.CancelCauseFunc, log *slog.Logger) (stop func()) {
	hbCtx, stopHB := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The lease as this worker last set it (on this process's monotonic clock, from
		// the claim just made). Past it another worker may hold the batch: the run stops
		// at once rather than when a store round trip says so, by which time a process
		// resumed after a pause would have started more of the batch's work twice.
		deadline := time.Now().Add(p.cfg.Lease)
		if first != nil {
			leased, stored := first.running(hbCtx)
			if !stored {
				return
			}
			deadline = leased.Add(p.cfg.Lease)
		}
		ticker := time.NewTicker(p.cfg.Lease / 3)
		defer ticker.Stop()
		expiry := time.NewTimer(time.Until(deadline))
		defer expiry.Stop()
		for {
			select {
			case <-hbCtx.Done():
				return
			case <-expiry.C:
			case <-ticker.C:
			}
			if time.Now().After(deadline) {
				log.Warn("the lease ran out before it could be extended; stopping the run", "lease", p.cfg.Lease)
				cancel(ErrLeaseLost)
				return
			}
			sent := time.Now()
			err := p.store.Extend(hbCtx, key, p.cfg.ID, p.now().Add(p.cfg.Lease))
			switch {
			case errors.Is(err, ErrLeaseLost):
				cancel(ErrLeaseLost)
				return
			case err == nil:
				deadline = sent.Add(p.cfg.Lease)
				expiry.Reset(time.Until(deadline))
			case hbCtx.Err() == nil:
				log.Warn("could not extend the lease; will try again", "err", err)
			}
		}
	}()
	return func() { stopHB(); wg.Wait() }
}
