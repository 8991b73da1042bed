package postgres

import (
	"context"
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/asyncfn/asyncfn"
)

// event is a NOTIFY payload as the schema's notify function writes it: {"b": batch id,
// "f": function, "s": state}, with s alone when the key did not fit in NOTIFY's 8000 bytes.
type event struct {
	BatchID  *string       `json:"b"`
	Function string        `json:"f"`
	State    asyncfn.State `json:"s"`
}

// Listen calls fn with the events of every store on this schema: Queued when a batch is
// created or handed back for a retry, Succeeded or Failed when it finishes (an abandoned
// batch included). The events are sent when the transaction that made the change commits,
// so a listener that re-reads the batch sees the change. An event with a zero Key (a key
// too long for a NOTIFY payload) means that some batch reached that state.
//
// Listen holds a connection of its own, outside the pool, for as long as it runs. It
// returns ctx's error when ctx is done, ErrClosed when the store is closed, and an error
// wrapping ErrUnavailable when the connection fails; the caller listens again, after a
// backoff. A connection that dies silently (a network partition) is noticed by TCP
// keepalives, which Go enables by default, within minutes.
func (s *Store) Listen(ctx context.Context, fn func(asyncfn.Event)) error {
	if s.closed.Load() {
		return asyncfn.ErrClosed
	}
	listenCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.closing, cancel)()
	conn, err := pgx.ConnectConfig(listenCtx, s.listen)
	if err != nil {
		return s.listenErr(ctx, err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(listenCtx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return s.listenErr(ctx, err)
	}
	for {
		n, err := conn.WaitForNotification(listenCtx)
		if err != nil {
			return s.listenErr(ctx, err)
		}
		var e event
		if err := json.Unmarshal([]byte(n.Payload), &e); err != nil || e.State == "" {
			s.log.Warn("postgres: ignoring a notification that is not an asyncfn event", "channel", n.Channel, "payload", n.Payload)
			continue
		}
		ev := asyncfn.Event{State: e.State}
		if e.BatchID != nil {
			ev.Key = asyncfn.Key{Function: e.Function, BatchID: *e.BatchID}
		}
		fn(ev)
	}
}

// listenErr says why Listen stopped: the caller's context, Close, or the connection.
func (s *Store) listenErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return s.err(err)
}
