// Package group commits the writes of concurrent callers together (group commit): the
// operations that arrive while a transaction runs wait for it, then run together in the
// next one, so that a store pays one commit (a write-ahead log write, an fsync, a round
// trip, a lock) for many batches' state changes rather than one each.
//
// There is no background goroutine: a caller that finds fewer transactions running than
// Committer.Lanes leads one, for its own operation and whatever else is queued; when it
// is done it hands the lead to the oldest caller still waiting, and returns. A lone caller
// therefore runs at once, as it would without grouping, and a group grows with the load.
//
// A write that nobody waits for (its ctx made by asyncfn.Unawaited: the answer it records is
// served already) waits up to Committer.Linger for company instead: the next transaction takes it along, or it
// leads one of its own when the time is up. Under a steady load such writes cost a share
// of other transactions rather than one each.
package group

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/asyncfn/asyncfn"
)

// Committer runs operations in shared transactions of type T. Its fields are set once,
// before the first Do.
type Committer[T any] struct {
	// Begin starts a transaction; ctx is not cancelled by any one caller.
	Begin func(ctx context.Context) (T, error)
	// Commit commits tx; an error means that it did not (or may not have) committed.
	Commit func(ctx context.Context, tx T) error
	// Rollback abandons tx.
	Rollback func(ctx context.Context, tx T)
	// Clean reports whether an operation's error is an outcome decided before it wrote
	// anything (the batch is a duplicate, the lease is lost), which leaves the
	// transaction good for the other operations of the group. Any other error rolls the
	// group back and every operation of it runs again alone.
	Clean func(error) bool
	// Max caps the operations of one transaction.
	Max int
	// Lanes is how many transactions may run at once (at least 1): one for a store with
	// one writer; more where a transaction waits on a server, which can run the next
	// group's statements while the last one's commit reaches the disk.
	Lanes int
	// Linger is how long an operation whose ctx asyncfn.Unawaited made may wait to join another
	// transaction before it leads one. 0: none waits.
	Linger time.Duration

	mu    sync.Mutex
	queue []*op[T]
	// leaders are the callers running a transaction; the queue holds only operations
	// lingering (asyncfn.Unawaited) unless it is Lanes.
	leaders int
}

type op[T any] struct {
	ctx context.Context
	fn  func(tx T) error
	err error
	// lead receives the group this caller is to lead (it comes first), or nil once its
	// operation is done.
	lead chan []*op[T]
	// lingering: an unawaited operation within its Linger, which a lane freed is not
	// handed to. queued: in the queue, not taken by a group yet.
	lingering, queued bool
}

// Do runs fn in a transaction, perhaps shared with other callers' operations, and returns
// once that transaction committed (fn's error if it returned one) or failed. fn may run
// more than once (again alone if its group failed); each run starts from the state the
// store had before it, and fn must set its results anew on every run. fn's statements take
// the caller's ctx: if it is cancelled meanwhile, the group fails and the others run alone.
//
// An operation whose ctx asyncfn.Unawaited made may wait up to Linger for another transaction to take
// it along before it leads one.
func (c *Committer[T]) Do(ctx context.Context, fn func(tx T) error) error {
	later := c.Linger > 0 && asyncfn.IsUnawaited(ctx)
	o := &op[T]{ctx: ctx, fn: fn, lead: make(chan []*op[T], 1), lingering: later}
	var group []*op[T]
	c.mu.Lock()
	if !later && c.leaders < max(c.Lanes, 1) {
		c.leaders++ // a lane is free: o runs at once, with whatever lingers
		group = c.take(o)
	} else {
		o.queued = true
		c.queue = append(c.queue, o)
	}
	c.mu.Unlock()
	if group == nil {
		if group = c.await(o); group == nil {
			return o.err
		}
	}

	c.run(group)

	// The lane goes to the oldest waiting, with the group it is to lead, unless all that
	// waits lingers: the next transaction, or the end of a linger, takes those.
	c.mu.Lock()
	if slices.ContainsFunc(c.queue, func(q *op[T]) bool { return !q.lingering }) {
		n := min(len(c.queue), max(c.Max, 1))
		next := c.queue[:n:n]
		c.queue = c.queue[n:]
		for _, q := range next {
			q.queued = false
		}
		next[0].lead <- next
	} else {
		c.leaders--
		if len(c.queue) == 0 {
			c.queue = nil // let the array go
		}
	}
	c.mu.Unlock()
	for _, g := range group[1:] {
		g.lead <- nil
	}
	return o.err
}

// take returns a group led by o with the oldest queued operations, up to Max in all.
// c.mu must be held.
func (c *Committer[T]) take(o *op[T]) []*op[T] {
	n := min(len(c.queue), max(c.Max, 1)-1)
	group := append([]*op[T]{o}, c.queue[:n]...)
	for _, q := range c.queue[:n] {
		q.queued = false
	}
	c.queue = c.queue[n:]
	return group
}

// await waits until o's caller is to lead a group (returned) or o is done (nil). An
// operation lingering leads a group of its own at the end of its linger if it is still
// queued and a lane is free; if none is, the lane is handed to it as to any other.
func (c *Committer[T]) await(o *op[T]) []*op[T] {
	if o.lingering {
		t := time.NewTimer(c.Linger)
		select {
		case group := <-o.lead:
			t.Stop()
			return group
		case <-t.C:
		}
		c.mu.Lock()
		o.lingering = false
		if o.queued && c.leaders < max(c.Lanes, 1) {
			c.leaders++
			c.queue = slices.DeleteFunc(c.queue, func(q *op[T]) bool { return q == o })
			o.queued = false
			group := c.take(o)
			c.mu.Unlock()
			return group
		}
		c.mu.Unlock()
	}
	return <-o.lead
}

// run runs a group in one transaction, or each of its operations alone when that fails.
func (c *Committer[T]) run(group []*op[T]) {
	if len(group) > 1 && c.together(group) {
		return
	}
	for _, o := range group {
		c.together([]*op[T]{o}) // alone: whatever fails is its own error
	}
}

// together runs the operations in one transaction and reports whether it committed, or
// settled every operation (a lone one's error, whatever it is, is its own).
func (c *Committer[T]) together(group []*op[T]) (ok bool) {
	ctx := context.WithoutCancel(group[0].ctx)
	alone := len(group) == 1
	tx, err := c.Begin(ctx)
	if err != nil {
		group[0].err = err
		return alone
	}
	for _, o := range group {
		if o.err = o.ctx.Err(); o.err != nil {
			continue
		}
		if o.err = call(o, tx); o.err != nil && (alone || !c.Clean(o.err)) {
			c.Rollback(ctx, tx)
			return alone
		}
	}
	if err := c.Commit(ctx, tx); err != nil {
		group[0].err = err
		return alone
	}
	return true
}

// call runs o's fn, turning a panic into an error, so that the lead is always handed on.
func call[T any](o *op[T], tx T) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("group: the operation panicked: %v", r)
		}
	}()
	return o.fn(tx)
}

// Outcome is Committer.Clean for asyncfn's stores: the sentinels their methods return
// having changed nothing.
func Outcome(err error) bool {
	for _, e := range []error{asyncfn.ErrDuplicate, asyncfn.ErrConflict, asyncfn.ErrNotFound, asyncfn.ErrLeaseLost, asyncfn.ErrNotClaimable, asyncfn.ErrCheckpointTooLarge} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
