package asyncfn

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/asyncfn/asyncfn/internal/wait"
)

// hub carries batch events between the parts of one process: the front end tells its
// workers that a batch is queued, and workers tell held polls that a batch is done. When
// the store is a Notifier, the relay feeds it the events of other processes too. Events are
// hints: whoever receives one re-reads the store.
type hub struct {
	mu      sync.Mutex
	done    map[Key][]chan *Batch
	queuedC []chan struct{}
}

// newHub returns an empty hub.
func newHub() *hub {
	return &hub{done: map[Key][]chan *Batch{}}
}

// Publish delivers e to the subscribers it concerns without blocking.
func (h *hub) Publish(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e.State.Done() {
		for _, c := range h.done[e.Key] {
			c <- e.Batch // buffered, and each waiter is sent one value only
		}
		delete(h.done, e.Key)
		return
	}
	if e.State == Queued {
		for _, c := range h.queuedC {
			select {
			case c <- struct{}{}:
			default: // a wake-up is already pending
			}
		}
	}
}

// WaitDone returns a channel that receives once when key's batch is published as done
// (the finished batch, or nil if the publisher did not have it), and a function to call
// when no longer waiting. Subscribe before reading the store, so that no event falls
// between the read and the wait.
func (h *hub) WaitDone(key Key) (<-chan *Batch, func()) {
	c := make(chan *Batch, 1)
	h.mu.Lock()
	h.done[key] = append(h.done[key], c)
	h.mu.Unlock()
	return c, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		waiters := h.done[key]
		for i, w := range waiters {
			if w == c {
				waiters = append(waiters[:i], waiters[i+1:]...)
				break
			}
		}
		if len(waiters) == 0 {
			delete(h.done, key)
		} else {
			h.done[key] = waiters
		}
	}
}

// Queued returns a channel that receives a value when a batch may have been queued since
// the last receive, and a function to unsubscribe.
func (h *hub) Queued() (<-chan struct{}, func()) {
	c := make(chan struct{}, 1)
	h.mu.Lock()
	h.queuedC = append(h.queuedC, c)
	h.mu.Unlock()
	return c, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		for i, w := range h.queuedC {
			if w == c {
				h.queuedC = append(h.queuedC[:i], h.queuedC[i+1:]...)
				return
			}
		}
	}
}

// relay publishes the events of other processes sharing a Notifier store on a hub,
// reconnecting with backoff when the store's connection fails. For a store that is not
// a Notifier it does nothing.
type relay struct {
	store  Store
	hub    *hub
	logger *slog.Logger
	loop   loop
}

// Start starts relaying in the background.
func (r *relay) Start(ctx context.Context) {
	n, ok := r.store.(Notifier)
	if !ok {
		return
	}
	r.loop.start(ctx, func(ctx context.Context) {
		backoff := 100 * time.Millisecond
		for ctx.Err() == nil {
			began := time.Now()
			err := n.Listen(ctx, r.hub.Publish)
			if ctx.Err() != nil {
				return
			}
			if time.Since(began) > time.Minute {
				backoff = 100 * time.Millisecond
			}
			r.logger.Warn("store notifications interrupted; polling until they resume", "err", err, "retry_in", backoff)
			// Whatever happened while deaf, workers and polls re-read the store.
			r.hub.Publish(Event{State: Queued})
			if !wait.Sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	})
}

// Stop stops relaying; it is safe to call more than once.
func (r *relay) Stop() { r.loop.stop() }

// loop runs one background goroutine with an idempotent stop.
type loop struct {
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

func (l *loop) start(ctx context.Context, fn func(ctx context.Context)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ctx, l.cancel = context.WithCancel(ctx)
	l.done = make(chan struct{})
	go func() {
		defer close(l.done)
		fn(ctx)
	}()
}

// stop cancels the goroutine and waits for it to return.
func (l *loop) stop() {
	l.mu.Lock()
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}
