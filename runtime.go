package asyncfn

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// RuntimeConfig configures the parts of one process. DefaultRuntimeConfig gives the
// defaults.
type RuntimeConfig struct {
	// Service configures the front end. Its Observer and Local are set by the runtime.
	Service ServiceConfig
	// Pool configures this process's workers. Its Observer is set by the runtime, and
	// its Concurrency from Workers.
	Pool PoolConfig
	// Workers is how many batches this process runs at once; 0: none (a front end
	// only). Default 2 x GOMAXPROCS.
	Workers int
	// SweepInterval is how often expired batches are deleted; 0: never (a store that
	// expires batches itself, such as DynamoDB with its TTL). Default 1m.
	SweepInterval time.Duration
	// Observer is told what the front end and the workers do (metrics, status page,
	// traces). Default nil: none.
	Observer Observer
}

// DefaultRuntimeConfig returns the documented defaults.
func DefaultRuntimeConfig() RuntimeConfig {
	pool := DefaultPoolConfig()
	return RuntimeConfig{
		Service:       DefaultServiceConfig(),
		Pool:          pool,
		Workers:       pool.Concurrency,
		SweepInterval: time.Minute,
	}
}

// Validate returns an error naming the first bad field.
func (c RuntimeConfig) Validate() error {
	switch {
	case c.Workers < 0:
		return errors.New("workers must not be negative")
	case c.SweepInterval < 0:
		return errors.New("sweep interval must not be negative")
	}
	if err := c.Service.Validate(); err != nil {
		return err
	}
	if c.Workers > 0 {
		c.Pool.Concurrency = c.Workers
		return c.Pool.Validate()
	}
	return nil
}

// Runtime is one process of a deployment: a front end (Service) and, with Workers, a
// worker pool, with what they share — the events that wake workers and held polls (from
// other processes too, when the store is a Notifier) — and the sweeper. It is what a
// command, the Lambda entry and tests build.
//
// Start order: the relay of other processes' events, the workers, the sweeper. Stop
// order (Stop): the workers first (they finish or hand back their batches while the store
// is still open), then the sweeper and the relay. The caller closes the store after Stop.
type Runtime struct {
	service *Service
	pool    *Pool // nil without workers
	sweeper *Sweeper
	relay   *relay
	stop    sync.Once
}

// NewRuntime builds the parts of a process over store for the functions in registry,
// without starting them.
func NewRuntime(store Store, registry *Registry, logger *slog.Logger, cfg RuntimeConfig) (*Runtime, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	hub := newHub()
	r := &Runtime{relay: &relay{store: store, hub: hub, logger: logger}}
	if cfg.SweepInterval > 0 {
		r.sweeper = NewSweeper(store, logger, cfg.SweepInterval)
	}
	if cfg.Workers > 0 {
		pc := cfg.Pool
		pc.Concurrency, pc.Observer = cfg.Workers, cfg.Observer
		pool, err := newPool(store, registry, hub, logger, pc)
		if err != nil {
			return nil, err
		}
		r.pool = pool
	}
	sc := cfg.Service
	sc.Observer, sc.Local = cfg.Observer, r.pool
	svc, err := newService(store, registry, hub, logger, sc)
	if err != nil {
		return nil, err
	}
	r.service = svc
	return r, nil
}

// Service returns the front end.
func (r *Runtime) Service() *Service { return r.service }

// Pool returns the worker pool, nil without workers.
func (r *Runtime) Pool() *Pool { return r.pool }

// Start starts the background loops in the order documented on Runtime. A process
// driven by events, told which batch to run (Pool.Process on AWS Lambda), never calls it:
// nothing may run between its invocations.
func (r *Runtime) Start(ctx context.Context) {
	r.relay.Start(ctx)
	if r.pool != nil {
		r.pool.Start(ctx)
	}
	if r.sweeper != nil {
		r.sweeper.Start(ctx)
	}
}

// Stop stops the background loops in the order documented on Runtime. It is safe to call
// more than once, and without Start.
func (r *Runtime) Stop() {
	r.stop.Do(func() {
		if r.pool != nil {
			r.pool.Stop()
		}
		if r.sweeper != nil {
			r.sweeper.Stop()
		}
		r.relay.Stop()
	})
}
