package asyncfn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// ErrOverloaded: too many batches are queued; the front end answers 429 so that Snowflake
// slows down and retries.
var ErrOverloaded = errors.New("asyncfn: too many batches queued")

// ErrUnknownFunction: no function is registered at the route.
var ErrUnknownFunction = errors.New("asyncfn: unknown function")

// ErrDispatch: a new batch is stored but its worker could not be started; the front end
// answers 503, Snowflake retries the POST, and the retry dispatches the batch again.
var ErrDispatch = errors.New("asyncfn: could not start a worker for the batch")

// Dispatcher starts the processing of a batch somewhere else, for deployments whose
// workers do not poll the store: on AWS Lambda, an asynchronous invocation of the worker
// function with the batch's key (never its rows). Dispatching a batch twice must be
// harmless; workers claim with Store.ClaimKey, which one caller only wins.
type Dispatcher interface {
	Dispatch(ctx context.Context, key Key) error
}

// ServiceConfig tunes the front end. DefaultServiceConfig gives the defaults.
type ServiceConfig struct {
	// Retention is how long a batch lives if its answer is never collected. Default 12h,
	// as Snowflake recommends for asynchronous state.
	Retention time.Duration
	// Grace is how long an answer stays after it was first served, for a GET retried
	// after a lost response. Default 10m.
	Grace time.Duration
	// SyncWait is how long a POST waits for its batch to finish and answer 200 at once.
	// 0 answers 202 at once. Default 1s.
	SyncWait time.Duration
	// PollWait is how long a GET of an unfinished batch is held open (long-poll) before
	// answering 202; keep it below the proxy's timeout (29 s on API Gateway). 0 answers at
	// once. Default 10s.
	PollWait time.Duration
	// MaxQueued is the number of queued batches past which new POSTs are answered 429.
	// Default 1000.
	MaxQueued int
	// Recheck is how often a held request re-reads the store in case a finish event was
	// missed (another process on a store that does not notify). Default 1s.
	Recheck time.Duration
	// Observer is told of accepted batches (metrics, status page). Default nil: none.
	Observer Observer
	// Dispatcher, when set, is called for every new batch, and again for a batch a
	// request finds stalled: queued for longer than Stalled after it was created or its
	// backoff ended, or running under an expired lease (its worker died). Default nil:
	// workers poll the store.
	Dispatcher Dispatcher
	// Stalled is how long a queued batch may wait before a request dispatches it again.
	// Default 10s.
	Stalled time.Duration
	// Local is the worker pool of this process, if it has one: a POST that may wait
	// (SyncWait) hands its new batch straight to a free worker of it, created claimed,
	// with the rows already parsed, and answers from the result in memory. Default nil:
	// every batch goes through the queue.
	Local *Pool
	// Exclusive tells that no other process uses the store (SQLite, which locks its
	// file; memory). A batch run at once by Local is then stored when its attempt ends,
	// in the writes that follow its answer, rather than created before it runs: this
	// process alone could create its key meanwhile, and holds a retried POST of it until
	// it is stored. Functions that save rows as they go (Checkpoint) are created first.
	// Default false.
	Exclusive bool
}

// DefaultServiceConfig returns the documented defaults.
func DefaultServiceConfig() ServiceConfig {
	return ServiceConfig{
		Retention: 12 * time.Hour,
		Grace:     10 * time.Minute,
		SyncWait:  time.Second,
		PollWait:  10 * time.Second,
		MaxQueued: 1000,
		Recheck:   time.Second,
		Stalled:   10 * time.Second,
	}
}

// Validate returns an error naming the first bad field.
func (c ServiceConfig) Validate() error {
	switch {
	case c.Retention <= 0:
		return errors.New("retention must be positive")
	case c.Grace <= 0:
		return errors.New("grace must be positive")
	case c.SyncWait < 0:
		return errors.New("sync-wait must not be negative")
	case c.PollWait < 0:
		return errors.New("poll-wait must not be negative")
	case c.MaxQueued <= 0:
		return errors.New("max-queued must be positive")
	case c.Recheck <= 0:
		return errors.New("recheck must be positive")
	case c.Dispatcher != nil && c.Stalled <= 0:
		return errors.New("stalled must be positive with a dispatcher")
	}
	return nil
}

// Service is the front end: it accepts batches and answers polls. It keeps no state of
// its own beyond caches: any number of services may share a store.
type Service struct {
	store    Store
	registry *Registry
	hub      *hub
	logger   *slog.Logger
	cfg      ServiceConfig
	now      func() time.Time
	obs      Observer
	keys     keyLocks // the POSTs of a key take turns, with Exclusive

	depthMu     sync.Mutex
	depth       int
	depthAt     time.Time
	depthFilled bool
}

// newService returns a front end over store for the functions in registry. hub carries
// events to and from workers in the same process.
func newService(store Store, registry *Registry, events *hub, logger *slog.Logger, cfg ServiceConfig) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Service{store: store, registry: registry, hub: events, logger: logger, cfg: cfg, now: time.Now, obs: observerOrNop(cfg.Observer)}, nil
}

// Observer returns the observer the service reports to (never nil), so that transports
// can report the rejections they decide themselves.
func (s *Service) Observer() Observer { return s.obs }

// Registry returns the functions the service answers for.
func (s *Service) Registry() *Registry { return s.registry }

// Store returns the service's store.
func (s *Service) Store() Store { return s.store }

// Request is a POSTed batch, decoded and validated by the transport.
type Request struct {
	Key     Key
	QueryID string
	Payload []byte
	Rows    []Row             // Payload parsed by ParseRows
	Headers map[string]string // those kept for the function (KeepHeader), by lower-case name
	// Function is the function at Key.Function, as Service.Function found it: looked up
	// once per request by the transport. If unset, Accept looks it up.
	Function Function
}

// Function returns the function served at name, or ErrUnknownFunction.
func (s *Service) Function(name string) (Function, error) {
	fn, ok := s.registry.Lookup(name)
	if !ok {
		return Function{}, ErrUnknownFunction
	}
	return fn, nil
}

// Admit decides before the body is read whether a POST for key may go on. Under overload
// it returns ErrOverloaded, unless the batch already exists (a retried POST is answered
// from its stored state).
func (s *Service) Admit(ctx context.Context, key Key) error {
	depth, err := s.queueDepth(ctx)
	if err != nil || depth < s.cfg.MaxQueued {
		return err
	}
	if _, err := s.store.Get(ctx, key, s.now(), false); err == nil {
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	return ErrOverloaded
}

// Accept stores a batch and hands it to the workers, or finds the one stored under its key.
// It waits up to SyncWait for the batch to finish, and returns its state without the
// payload. A batch id reused with another body returns ErrConflict; a function not served,
// ErrUnknownFunction.
//
// A batch takes one of three paths: run at once by a free worker of this process (created
// claimed, run from the rows in memory), queued for any worker, or found stored already
// (a retried POST, answered from its state).
func (s *Service) Accept(ctx context.Context, r Request) (*Batch, error) {
	if r.Function.Func == nil {
		fn, err := s.Function(r.Key.Function)
		if err != nil {
			return nil, err
		}
		r.Function = fn
	}
	now := s.now()
	b := &Batch{
		Key:         r.Key,
		QueryID:     r.QueryID,
		State:       Queued,
		Payload:     r.Payload,
		Digest:      Digest(r.Payload),
		Rows:        len(r.Rows),
		Headers:     r.Headers,
		MaxAttempts: r.Function.MaxAttempts,
		CreatedAt:   now,
		ExpiresAt:   now.Add(s.cfg.Retention),
	}
	log := s.logger.With(LogFunction, r.Key.Function, LogBatchID, r.Key.BatchID, LogQueryID, r.QueryID)
	unlock := func() {}
	if s.cfg.Exclusive {
		var err error
		if unlock, err = s.keys.lock(ctx, r.Key); err != nil {
			return nil, err
		}
	}
	deadline := time.Now().Add(s.cfg.SyncWait)
	local := s.reserve(ctx, b, deadline)
	var done <-chan *Batch // the end of a batch queued, subscribed to before it can end
	if local == nil && s.cfg.SyncWait > 0 {
		var unsubscribe func()
		done, unsubscribe = s.hub.WaitDone(r.Key)
		defer unsubscribe()
	}
	runFirst := local != nil && s.cfg.Exclusive && !r.Function.Checkpoint.Enabled()
	var old *Batch
	var err error
	if runFirst {
		old, err = s.lookup(ctx, b)
	} else {
		old, err = s.store.Create(ctx, b)
	}
	if err != nil {
		local.release() // not created: the worker is free for others at once
	}
	info := AcceptInfo{Key: r.Key, QueryID: r.QueryID, Rows: len(r.Rows), Bytes: len(r.Payload), Duration: s.now().Sub(now)}
	if err == nil && local != nil {
		if runFirst {
			local.first = newFirstRun(s.store, b, r.Payload, s.cfg.Local.cfg.Lease, unlock) // the key stays taken until the batch is stored
		} else {
			unlock()
		}
		s.obs.BatchAccepted(info)
		return s.runAtOnce(ctx, r, b, local, deadline, log)
	}
	unlock()
	switch {
	case err == nil:
		s.obs.BatchAccepted(info)
		return s.queued(ctx, r, b, done, log)
	case errors.Is(err, ErrDuplicate):
		info.Duplicate = true
		s.obs.BatchAccepted(info)
		return s.duplicate(ctx, r, old, now, log)
	case errors.Is(err, ErrConflict):
		log.Warn("batch id reused with a different body")
	}
	return nil, err
}

// lookup checks b's key in the store as Create would, for a batch to run before it is
// stored (ServiceConfig.Exclusive): nil if it is free; the live batch under it with
// ErrDuplicate, or with ErrConflict if its body differs.
func (s *Service) lookup(ctx context.Context, b *Batch) (*Batch, error) {
	old, err := s.store.Get(ctx, b.Key, b.CreatedAt, false)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	case old.Digest != b.Digest:
		return old, ErrConflict
	}
	return old, ErrDuplicate
}

// atOnce is a batch about to run on a worker of this process reserved for it.
type atOnce struct {
	slot   *reservation
	answer *handoff
	first  *firstRun // stores the batch, if it runs before it is stored
}

// release gives the worker back, for a batch that was not created. It does nothing on nil.
func (a *atOnce) release() {
	if a != nil {
		a.slot.Cancel()
	}
}

// handoff passes the end of an attempt run at once to the POST that waits for it before
// the store records it: the POST answers while the worker writes, and a final answer
// served so is recorded as delivered with its outcome (FinishParams.GraceUntil), in one
// write. A retried POST or a GET meanwhile finds the batch running in the store, and
// waits for that write.
type handoff struct {
	grace time.Duration // the grace period of an answer delivered
	c     chan *Batch   // the batch as its attempt leaves it; buffered
	mu    sync.Mutex
	over  bool // taken by the worker, or given up by the POST
}

func newHandoff(grace time.Duration) *handoff {
	return &handoff{grace: grace, c: make(chan *Batch, 1)}
}

// take reports whether the POST still waits, and if so holds it for send.
func (h *handoff) take() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.over {
		return false
	}
	h.over = true
	return true
}

// send gives the POST, which take held, the batch as the attempt left it.
func (h *handoff) send(b *Batch) { h.c <- b }

// wait returns the batch the worker sends within d, or nil if there is none by then (or
// ctx ends), after which take refuses.
func (h *handoff) wait(ctx context.Context, d time.Duration) *Batch {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case b := <-h.c:
		return b
	case <-t.C:
	case <-ctx.Done():
	}
	h.mu.Lock()
	taken := h.over
	h.over = true
	h.mu.Unlock()
	if taken { // the worker is about to send
		return <-h.c
	}
	return nil
}

// reserve holds a free worker of this process for b until deadline, if the POST may wait
// for its answer and this process has workers that poll nothing else, and leases b to it;
// nil otherwise. Waiting here for a worker, rather than queueing, spares a busy process
// the queue's round trip through the store; past the budget, the batch is queued. b's
// payload is then written only if it is not answered within the budget: a batch answered
// 200 on its POST needs none stored.
func (s *Service) reserve(ctx context.Context, b *Batch, deadline time.Time) *atOnce {
	if s.cfg.Local == nil || s.cfg.SyncWait <= 0 || s.cfg.Dispatcher != nil {
		return nil
	}
	reserveCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	slot := s.cfg.Local.reserve(reserveCtx, b.Key.Function)
	if slot == nil {
		return nil
	}
	slot.Lease(b)
	b.Payload = nil
	return &atOnce{slot: slot, answer: newHandoff(s.cfg.Grace)}
}

// runAtOnce runs a batch created claimed (or not stored yet: local.first) on the reserved
// worker, and answers from its result if it finishes by deadline; if not (or it is to be
// retried), its payload is stored before the 202 (with the batch, if it is not stored
// yet), so that any worker can run it again if this process dies.
func (s *Service) runAtOnce(ctx context.Context, r Request, b *Batch, local *atOnce, deadline time.Time, log *slog.Logger) (*Batch, error) {
	log.Info("batch accepted; running at once", "rows", len(r.Rows), "bytes", len(r.Payload))
	running := *b
	local.slot.Run(b, r.Rows, local.answer, local.first)
	got := local.answer.wait(ctx, time.Until(deadline))
	if got != nil && got.State.Done() {
		return got, nil
	}
	if got == nil {
		got = &running
	}
	storeCtx := context.WithoutCancel(ctx)
	store := func() error { return s.store.SavePayload(storeCtx, r.Key, s.now(), r.Payload) }
	if local.first != nil {
		store = func() error { return local.first.storeRunning(storeCtx, s.now()) }
	}
	if err := store(); err != nil {
		log.Error("could not store the payload of a batch still running", "err", err)
		return nil, err
	}
	return got, nil
}

// queued announces a batch stored Queued to the workers (and the dispatcher, if any), and
// waits up to SyncWait for its answer, told by done; the batch as created is its state
// until then, which spares a read of the store.
func (s *Service) queued(ctx context.Context, r Request, b *Batch, done <-chan *Batch, log *slog.Logger) (*Batch, error) {
	s.bumpDepth()
	s.hub.Publish(Event{Key: r.Key, State: Queued})
	log.Info("batch accepted", "rows", len(r.Rows), "bytes", len(r.Payload))
	if d := s.cfg.Dispatcher; d != nil {
		if err := d.Dispatch(ctx, r.Key); err != nil {
			log.Error("could not start a worker for the batch", "err", err)
			return nil, fmt.Errorf("%w: %v", ErrDispatch, err)
		}
	}
	b.Payload = nil
	if s.cfg.SyncWait <= 0 {
		return b, nil
	}
	return s.hold(ctx, b, s.cfg.SyncWait, done)
}

// duplicate answers a retried POST from the stored batch old, storing the payload it
// brings if old lacks one (its process died running it from memory).
func (s *Service) duplicate(ctx context.Context, r Request, old *Batch, now time.Time, log *slog.Logger) (*Batch, error) {
	log.Info("batch already accepted; answering from its state", "state", old.State)
	if !old.State.Done() {
		if err := s.store.SavePayload(ctx, r.Key, now, r.Payload); err != nil && !errors.Is(err, ErrNotFound) {
			return nil, err
		}
	}
	if old.State.Done() || s.cfg.SyncWait <= 0 {
		s.redispatchStalled(ctx, old)
		return s.delivered(ctx, old), nil
	}
	return s.wait(ctx, r.Key, s.cfg.SyncWait)
}

// Poll returns the state of a batch without its payload, holding the call up to PollWait
// while it is unfinished. ErrNotFound if the batch is unknown or expired.
func (s *Service) Poll(ctx context.Context, key Key) (*Batch, error) {
	if _, err := s.Function(key.Function); err != nil {
		return nil, err
	}
	// A batch of key may run before it is stored: its POST stores it within SyncWait.
	started := time.Now()
	if err := s.keys.wait(ctx, key, s.cfg.PollWait); err != nil {
		return nil, err
	}
	return s.wait(ctx, key, max(s.cfg.PollWait-time.Since(started), 0))
}

// wait returns the batch once it is done, or its state after d.
func (s *Service) wait(ctx context.Context, key Key, d time.Duration) (*Batch, error) {
	var done <-chan *Batch
	if d > 0 {
		c, unsubscribe := s.hub.WaitDone(key)
		defer unsubscribe()
		done = c
	}
	b, err := s.store.Get(ctx, key, s.now(), false)
	if err != nil || b.State.Done() || d <= 0 {
		if err == nil {
			s.redispatchStalled(ctx, b)
		}
		return s.delivered(ctx, b), err
	}
	s.redispatchStalled(ctx, b)
	return s.hold(ctx, b, d, done)
}

// hold waits up to d for the unfinished batch b to finish, woken by done (subscribed
// before b was read) or, in case an event was missed, by rereading the store every
// Recheck; it returns the batch as it last saw it.
func (s *Service) hold(ctx context.Context, b *Batch, d time.Duration, done <-chan *Batch) (*Batch, error) {
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	recheck := time.NewTicker(s.cfg.Recheck)
	defer recheck.Stop()
	for {
		select {
		case <-ctx.Done():
			return b, nil
		case <-timeout.C:
			return b, nil
		case finished := <-done:
			if finished != nil {
				return s.delivered(ctx, finished), nil
			}
			done = nil // sent once: read the store, then rely on the timer and rechecks
		case <-recheck.C:
		}
		next, err := s.store.Get(ctx, b.Key, s.now(), false)
		if err != nil || next.State.Done() {
			return s.delivered(ctx, next), err
		}
		s.redispatchStalled(ctx, next)
		b = next
	}
}

// redispatchStalled dispatches an unfinished batch again if its worker seems lost: the
// invocation failed or never ran, or the worker died. Duplicates are harmless, so a
// failure here is only logged: the next poll tries again.
func (s *Service) redispatchStalled(ctx context.Context, b *Batch) {
	d := s.cfg.Dispatcher
	if d == nil || b.State.Done() {
		return
	}
	now := s.now()
	since := b.CreatedAt
	if b.RunAfter.After(since) {
		since = b.RunAfter
	}
	stalled := (b.State == Queued && now.Sub(since) >= s.cfg.Stalled) ||
		(b.State == Running && b.LeaseUntil.Before(now))
	if !stalled {
		return
	}
	s.logger.Warn("batch stalled; dispatching it again", LogFunction, b.Key.Function, LogBatchID, b.Key.BatchID, "state", b.State)
	if err := d.Dispatch(ctx, b.Key); err != nil {
		s.logger.Error("could not dispatch a stalled batch", LogFunction, b.Key.Function, LogBatchID, b.Key.BatchID, "err", err)
	}
}

// delivered records, in the background, the first time a finished batch's answer goes
// out, which starts its grace period: the answer need not wait for that write, and a
// failure to record it only delays the cleanup, so it is logged, not returned.
func (s *Service) delivered(ctx context.Context, b *Batch) *Batch {
	if b == nil || !b.State.Done() || !b.DeliveredAt.IsZero() {
		return b
	}
	now := s.now()
	go func() {
		ctx, cancel := context.WithTimeout(Unawaited(context.WithoutCancel(ctx)), 30*time.Second)
		defer cancel()
		err := s.store.MarkDelivered(ctx, b.Key, now, now.Add(s.cfg.Grace))
		if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrClosed) {
			s.logger.Warn("could not record the delivery of a batch", LogFunction, b.Key.Function, LogBatchID, b.Key.BatchID, "err", err)
		}
	}()
	return b
}

// queueDepth returns the number of queued batches, read from the store at most every
// 100 ms: a fresh count per POST would cost a query on the hot path.
func (s *Service) queueDepth(ctx context.Context) (int, error) {
	s.depthMu.Lock()
	defer s.depthMu.Unlock()
	if s.depthFilled && time.Since(s.depthAt) < 100*time.Millisecond {
		return s.depth, nil
	}
	n, err := s.store.CountQueued(ctx, s.now())
	if err != nil {
		return 0, fmt.Errorf("counting queued batches: %w", err)
	}
	s.depth, s.depthAt, s.depthFilled = n, time.Now(), true
	return s.depth, nil
}

// bumpDepth counts a batch this process queued, so that a burst between two reads of the
// store is still held back.
func (s *Service) bumpDepth() {
	s.depthMu.Lock()
	s.depth++
	s.depthMu.Unlock()
}
