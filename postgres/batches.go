package postgres

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/asyncfn/asyncfn"
)

// columns of the batches table, in the order of asyncfn.Batch's fields as scanBatch and
// batchArgs read and write them.
var columns = []string{
	"function", "batch_id", "query_id", "state", "payload", "digest", "row_count", "result",
	"error_kind", "error_message", "attempts", "max_attempts", "owner", "lease_until",
	"run_after", "created_at", "started_at", "finished_at", "delivered_at", "expires_at", "headers",
}

// selectList is the column list that scanBatch reads, each prefixed (a table alias), with
// NULL for the payload unless withPayload, then the numbers and values of the rows saved
// in table saved (NULL unless withPayload).
func selectList(prefix string, withPayload bool, saved string) string {
	cols := make([]string, len(columns))
	for i, c := range columns {
		cols[i] = prefix + c
		if c == "payload" && !withPayload {
			cols[i] = "NULL::bytea"
		}
	}
	if !withPayload {
		return strings.Join(append(cols, "NULL::integer[]", "NULL::bytea[]"), ", ")
	}
	for _, c := range []string{"number", "value"} {
		cols = append(cols, "(SELECT array_agg(s."+c+" ORDER BY s.number) FROM "+saved+" AS s WHERE s.function = "+
			prefix+"function AND s.batch_id = "+prefix+"batch_id)")
	}
	return strings.Join(cols, ", ")
}

// Shared conditions, with $1 the caller's now. claimable: Queued and due, or Running
// under a lease that ended with attempts left. abandoned: Running under a lease that
// ended with no attempts left, which fails instead. Both only once the payload is stored
// (a batch created claimed may wait for it: see asyncfn.Store.Create).
const (
	claimable = `(state = 'queued' AND (run_after IS NULL OR run_after <= $1)
		OR state = 'running' AND lease_until < $1 AND attempts < max_attempts) AND payload IS NOT NULL`
	abandoned = `(state = 'running' AND lease_until < $1 AND attempts >= max_attempts AND payload IS NOT NULL)`
)

// abandonedKind and abandonedFormat are asyncfn.AbandonedError as the kind and a format()
// pattern of its message, so that one statement can fail every abandoned batch, each with
// its own count of attempts, by the words of the domain package.
var abandonedKind, abandonedFormat = func() (string, string) {
	const mark = 987654321
	e := asyncfn.AbandonedError(mark)
	return string(e.Kind), strings.Replace(strings.ReplaceAll(e.Message, "%", "%%"), strconv.Itoa(mark), "%s", 1)
}()

// queries are the store's statements, their names qualified with its schema once and for
// all, so that they do not depend on search_path and pgx can cache them as prepared
// statements.
type queries struct {
	create, get, getPayload, claim, claimKey, abandonKey, extend                            string
	finishSucceeded, finishFailed, finishRetry, finishHandBack, markDelivered, sweep, stats string
	countQueued, savePayload, checkpoint                                                    string
}

func newQueries(schema string) queries {
	ident := pgx.Identifier{schema}.Sanitize()
	var values, excluded []string
	for i, c := range columns {
		values = append(values, "$"+strconv.Itoa(i+1))
		if c != "function" && c != "batch_id" {
			excluded = append(excluded, c+" = excluded."+c)
		}
	}
	saved := ident + ".saved_rows"
	r := strings.NewReplacer(
		"{t}", ident+".batches",
		"{saved}", saved,
		"{created_at}", "$"+strconv.Itoa(slices.Index(columns, "created_at")+1),
		"{notify}", ident+".notify",
		"{ch}", "'"+channelOf(schema)+"'", // a schema name has no quotes to escape
		"{columns}", strings.Join(columns, ", "),
		"{values}", strings.Join(values, ", "),
		"{excluded}", strings.Join(excluded, ", "),
		"{cols}", selectList("", false, saved),
		"{cols+payload}", selectList("", true, saved),
		"{b.cols+payload}", selectList("b.", true, saved),
		"{claimable}", claimable,
		"{abandoned}", abandoned,
		"{functions}", "(coalesce(cardinality($4::text[]), 0) = 0 OR function = ANY($4))",
	)
	return queries{
		// One statement, so that concurrent creates of a key store exactly one batch: a
		// live row with the key stays as it is (no row is returned, the caller reads it),
		// an expired one is replaced in place, as if it had been swept first (its saved
		// rows deleted, its count of bytes saved reset). Only a queued batch is news to
		// other processes: one created claimed is run by its creator.
		create: r.Replace(`WITH stale AS (
				DELETE FROM {saved} AS s USING {t} AS old
				WHERE old.function = $1 AND old.batch_id = $2 AND old.expires_at <= {created_at}
					AND s.function = old.function AND s.batch_id = old.batch_id
			)
			INSERT INTO {t} AS b ({columns}) VALUES ({values})
			ON CONFLICT (function, batch_id) DO UPDATE SET {excluded}, saved_bytes = 0
			WHERE b.expires_at <= excluded.created_at
			RETURNING CASE WHEN b.state = 'queued' THEN {notify}({ch}, b.state, b.function, b.batch_id) END`),
		get:        r.Replace(`SELECT {cols} FROM {t} WHERE function = $1 AND batch_id = $2 AND expires_at > $3`),
		getPayload: r.Replace(`SELECT {cols+payload} FROM {t} WHERE function = $1 AND batch_id = $2 AND expires_at > $3`),
		// The candidates are picked and locked with SKIP LOCKED, so concurrent claimers
		// take disjoint rows without waiting for each other; the rows are then updated by
		// key rather than by ctid, so that a row changed by a transaction that committed
		// after this statement's snapshot is still found (in its latest version). The
		// abandoned batches fail in the same statement, with the same locking.
		// ORDER BY created_at LIMIT walks the batches_claim partial index.
		claim: r.Replace(`WITH stale AS MATERIALIZED (
				SELECT function, batch_id FROM {t}
				WHERE {abandoned} AND expires_at > $1 AND {functions}
				FOR UPDATE SKIP LOCKED
			), failed AS (
				UPDATE {t} AS b SET state = 'failed', owner = '', lease_until = NULL, finished_at = $1,
					error_kind = $2, error_message = format($3, b.attempts)
				FROM stale WHERE b.function = stale.function AND b.batch_id = stale.batch_id
				RETURNING {notify}({ch}, 'failed', b.function, b.batch_id)
			), picked AS MATERIALIZED (
				SELECT function, batch_id FROM {t}
				WHERE state IN ('queued', 'running') AND {claimable} AND expires_at > $1 AND {functions}
				ORDER BY created_at
				LIMIT $7
				FOR UPDATE SKIP LOCKED
			)
			UPDATE {t} AS b SET state = 'running', owner = $5, lease_until = $6, started_at = $1, attempts = b.attempts + 1
			FROM picked WHERE b.function = picked.function AND b.batch_id = picked.batch_id
			RETURNING {b.cols+payload}`),
		// A single row: waiting for its lock (rather than skipping it) lets concurrent
		// ClaimKeys of one batch see each other's claim, and exactly one wins.
		claimKey: r.Replace(`UPDATE {t} SET state = 'running', owner = $4, lease_until = $5, started_at = $1, attempts = attempts + 1
			WHERE function = $2 AND batch_id = $3 AND expires_at > $1 AND {claimable}
			RETURNING {cols+payload}`),
		abandonKey: r.Replace(`WITH failed AS (
				UPDATE {t} SET state = 'failed', owner = '', lease_until = NULL, finished_at = $1,
					error_kind = $4, error_message = format($5, attempts)
				WHERE function = $2 AND batch_id = $3 AND expires_at > $1 AND {abandoned}
				RETURNING {notify}({ch}, 'failed', function, batch_id)
			)
			SELECT EXISTS (SELECT FROM {t} WHERE function = $2 AND batch_id = $3 AND expires_at > $1)`),
		extend: r.Replace(`UPDATE {t} SET lease_until = $4
			WHERE function = $1 AND batch_id = $2 AND state = 'running' AND owner = $3`),
		// The three outcomes of asyncfn.Finished, each conditional on the lease. A batch
		// finished has no more use for its saved rows. A final one may be delivered with it
		// (least ignores a NULL grace).
		// A batch whose answer went out as it finished (delivered_at given) is news to
		// nobody: its client has the answer (see asyncfn.Notifier).
		finishSucceeded: r.Replace(`WITH done AS (
				UPDATE {t} SET state = 'succeeded', owner = '', lease_until = NULL,
					result = $4, error_kind = NULL, error_message = NULL, finished_at = $5,
					delivered_at = $6, expires_at = least(expires_at, $7)
				WHERE function = $1 AND batch_id = $2 AND state = 'running' AND owner = $3
				RETURNING CASE WHEN $6::timestamptz IS NULL THEN {notify}({ch}, 'succeeded', function, batch_id) END
			), dropped AS (
				DELETE FROM {saved} WHERE function = $1 AND batch_id = $2 AND EXISTS (SELECT FROM done)
			)
			SELECT FROM done`),
		finishFailed: r.Replace(`WITH done AS (
				UPDATE {t} SET state = 'failed', owner = '', lease_until = NULL,
					error_kind = $4, error_message = $5, finished_at = $6,
					delivered_at = $7, expires_at = least(expires_at, $8)
				WHERE function = $1 AND batch_id = $2 AND state = 'running' AND owner = $3
				RETURNING CASE WHEN $7::timestamptz IS NULL THEN {notify}({ch}, 'failed', function, batch_id) END
			), dropped AS (
				DELETE FROM {saved} WHERE function = $1 AND batch_id = $2 AND EXISTS (SELECT FROM done)
			)
			SELECT FROM done`),
		finishRetry: r.Replace(`UPDATE {t} SET state = 'queued', owner = '', lease_until = NULL, run_after = $4,
				error_kind = $5, error_message = $6
			WHERE function = $1 AND batch_id = $2 AND state = 'running' AND owner = $3
			RETURNING {notify}({ch}, 'queued', function, batch_id)`),
		// An attempt interrupted by shutdown does not count, and the last error stays.
		finishHandBack: r.Replace(`UPDATE {t} SET state = 'queued', owner = '', lease_until = NULL, run_after = $4,
				attempts = attempts - 1
			WHERE function = $1 AND batch_id = $2 AND state = 'running' AND owner = $3
			RETURNING {notify}({ch}, 'queued', function, batch_id)`),
		markDelivered: r.Replace(`WITH delivered AS (
				UPDATE {t} SET delivered_at = $3, expires_at = least(expires_at, $4)
				WHERE function = $1 AND batch_id = $2 AND expires_at > $3
					AND state IN ('succeeded', 'failed') AND delivered_at IS NULL
			)
			SELECT EXISTS (SELECT FROM {t} WHERE function = $1 AND batch_id = $2 AND expires_at > $3)`),
		// SKIP LOCKED: sweepers in several processes delete disjoint rows and never wait
		// for each other, nor for a claim or a finish holding a row. Oldest first, along
		// batches_expiry.
		sweep: r.Replace(`WITH picked AS MATERIALIZED (
				SELECT function, batch_id FROM {t} WHERE expires_at <= $1
				ORDER BY expires_at
				LIMIT $2
				FOR UPDATE SKIP LOCKED
			)
			DELETE FROM {t} AS b USING picked WHERE b.function = picked.function AND b.batch_id = picked.batch_id`),
		stats: r.Replace(`SELECT state, count(*) FROM {t} WHERE expires_at > $1 GROUP BY state`),
		// Along the batches_claim partial index: the unfinished rows only.
		countQueued: r.Replace(`SELECT count(*) FROM {t} WHERE state = 'queued' AND expires_at > $1`),
		// Tells a live batch (true) from none (no row); the payload is written only if
		// missing.
		savePayload: r.Replace(`WITH live AS (
				SELECT function, batch_id, payload IS NULL AS missing FROM {t}
				WHERE function = $1 AND batch_id = $2 AND expires_at > $3 FOR UPDATE
			), saved AS (
				UPDATE {t} AS b SET payload = $4 FROM live
				WHERE live.missing AND b.function = live.function AND b.batch_id = live.batch_id
			)
			SELECT true FROM live`),
		// One statement: the bytes given are counted on condition of the lease and the
		// limit, and the rows added only if they were; the first of a row given twice
		// wins. The last column tells a lost lease from the limit reached (the snapshot
		// is from before the update).
		checkpoint: r.Replace(`WITH counted AS (
				UPDATE {t} SET saved_bytes = saved_bytes + $5
				WHERE function = $1 AND batch_id = $2 AND state = 'running' AND owner = $3 AND expires_at > $4
					AND saved_bytes + $5 <= $6
				RETURNING function, batch_id
			), added AS (
				INSERT INTO {saved} (function, batch_id, number, value)
				SELECT counted.function, counted.batch_id, r.number, r.value FROM counted,
					(SELECT DISTINCT ON (number) number, value
					FROM unnest($7::integer[], $8::bytea[]) WITH ORDINALITY AS given(number, value, i)
					ORDER BY number, i) AS r
				ON CONFLICT DO NOTHING
			)
			SELECT EXISTS (SELECT FROM counted), EXISTS (SELECT FROM {t}
				WHERE function = $1 AND batch_id = $2 AND state = 'running' AND owner = $3 AND expires_at > $4)`),
	}
}

// nullTime stores the zero time as NULL.
// delivered is the delivered_at a final outcome sets: its time if delivered with it.
func delivered(p asyncfn.FinishParams) *time.Time {
	if p.GraceUntil.IsZero() {
		return nil
	}
	return &p.Now
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// errorArgs are the error_kind and error_message of e, NULL for none.
func errorArgs(e *asyncfn.Error) (kind, message *string) {
	if e == nil {
		return nil, nil
	}
	k := string(e.Kind)
	return &k, &e.Message
}

// batchArgs are the values of columns for b.
func batchArgs(b *asyncfn.Batch) []any {
	kind, message := errorArgs(b.Error)
	return []any{
		b.Key.Function, b.Key.BatchID, b.QueryID, string(b.State), b.Payload, b.Digest, b.Rows, b.Result,
		kind, message, b.Attempts, b.MaxAttempts, b.Owner, nullTime(b.LeaseUntil),
		nullTime(b.RunAfter), b.CreatedAt, nullTime(b.StartedAt), nullTime(b.FinishedAt), nullTime(b.DeliveredAt), b.ExpiresAt,
		headersArg(b.Headers),
	}
}

// headersArg stores no headers as NULL.
func headersArg(h map[string]string) any {
	if len(h) == 0 {
		return nil
	}
	return h
}

// scanBatch reads a row of selectList.
func scanBatch(row pgx.Row) (*asyncfn.Batch, error) {
	var b asyncfn.Batch
	var state string
	var kind, message *string
	var leaseUntil, runAfter, startedAt, finishedAt, deliveredAt *time.Time
	var numbers []int32
	var values [][]byte
	err := row.Scan(&b.Key.Function, &b.Key.BatchID, &b.QueryID, &state, &b.Payload, &b.Digest, &b.Rows, &b.Result,
		&kind, &message, &b.Attempts, &b.MaxAttempts, &b.Owner, &leaseUntil,
		&runAfter, &b.CreatedAt, &startedAt, &finishedAt, &deliveredAt, &b.ExpiresAt, &b.Headers, &numbers, &values)
	if err != nil {
		return nil, err
	}
	for i, n := range numbers {
		b.Saved = append(b.Saved, asyncfn.SavedRow{Number: int(n), Value: values[i]})
	}
	b.State = asyncfn.State(state)
	if kind != nil {
		b.Error = &asyncfn.Error{Kind: asyncfn.ErrorKind(*kind), Message: *message}
	}
	for _, t := range []struct{ dst, src *time.Time }{
		{&b.LeaseUntil, leaseUntil}, {&b.RunAfter, runAfter}, {&b.StartedAt, startedAt},
		{&b.FinishedAt, finishedAt}, {&b.DeliveredAt, deliveredAt},
	} {
		if t.src != nil {
			*t.dst = *t.src
		}
	}
	return &b, nil
}

// Create stores b unless a live batch has its key. The INSERT and the read of the batch
// already there are two statements (the read needs a snapshot taken after a concurrent
// creator committed); if that batch is gone by the time it is read, Create tries again.
func (s *Store) Create(ctx context.Context, b *asyncfn.Batch) (*asyncfn.Batch, error) {
	for {
		tag, err := s.exec(ctx, s.q.create, batchArgs(b)...)
		if err != nil {
			return nil, err
		}
		if tag.RowsAffected() == 1 {
			return nil, nil
		}
		old, err := scanBatch(s.pool.QueryRow(ctx, s.q.get, b.Key.Function, b.Key.BatchID, b.CreatedAt))
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, s.err(err)
		}
		if old.Digest == b.Digest {
			return old, asyncfn.ErrDuplicate
		}
		return old, asyncfn.ErrConflict
	}
}

func (s *Store) Get(ctx context.Context, key asyncfn.Key, now time.Time, withPayload bool) (*asyncfn.Batch, error) {
	q := s.q.get
	if withPayload {
		q = s.q.getPayload
	}
	b, err := scanBatch(s.pool.QueryRow(ctx, q, key.Function, key.BatchID, now))
	return b, s.err(err)
}

func (s *Store) Claim(ctx context.Context, p asyncfn.ClaimParams) ([]*asyncfn.Batch, error) {
	var bs []*asyncfn.Batch
	var scanErr error
	err := s.write(ctx, func(b *pgx.Batch) {
		bs, scanErr = nil, nil
		b.Queue(s.q.claim, p.Now, abandonedKind, abandonedFormat, p.Functions, p.Owner, p.Now.Add(p.Lease), max(p.Limit, 0)).
			Query(func(rows pgx.Rows) error {
				bs, scanErr = pgx.CollectRows(rows, func(row pgx.CollectableRow) (*asyncfn.Batch, error) { return scanBatch(row) })
				return nil
			})
	})
	if err == nil {
		err = s.err(scanErr)
	}
	if err != nil {
		return nil, err // not known to be committed: the leases must not be used
	}
	// RETURNING follows no order.
	slices.SortStableFunc(bs, func(a, b *asyncfn.Batch) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return bs, nil
}

// ClaimKey tries the claim first, the path of every event but a repeated one; only when it
// fails does a second statement fail the batch if it was abandoned and tell a batch that
// cannot be claimed from one that does not exist.
func (s *Store) ClaimKey(ctx context.Context, key asyncfn.Key, p asyncfn.ClaimParams) (*asyncfn.Batch, error) {
	var b *asyncfn.Batch
	err := s.queryRow(ctx, s.q.claimKey, []any{p.Now, key.Function, key.BatchID, p.Owner, p.Now.Add(p.Lease)}, func(row pgx.Row) (err error) {
		b, err = scanBatch(row)
		return err
	})
	if !errors.Is(err, asyncfn.ErrNotFound) {
		return b, err
	}
	var exists bool
	if err := s.pool.QueryRow(ctx, s.q.abandonKey, p.Now, key.Function, key.BatchID, abandonedKind, abandonedFormat).Scan(&exists); err != nil {
		return nil, s.err(err)
	}
	if !exists {
		return nil, asyncfn.ErrNotFound
	}
	return nil, asyncfn.ErrNotClaimable
}

func (s *Store) SavePayload(ctx context.Context, key asyncfn.Key, now time.Time, payload []byte) error {
	var found bool
	err := s.queryRow(ctx, s.q.savePayload, []any{key.Function, key.BatchID, now, payload}, func(row pgx.Row) error { return row.Scan(&found) })
	if err != nil {
		return err
	}
	if !found {
		return asyncfn.ErrNotFound
	}
	return nil
}

func (s *Store) Extend(ctx context.Context, key asyncfn.Key, owner string, until time.Time) error {
	tag, err := s.exec(ctx, s.q.extend, key.Function, key.BatchID, owner, until)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return asyncfn.ErrLeaseLost
	}
	return nil
}

// Finish applies asyncfn.Finished in SQL: one conditional UPDATE per outcome, which
// changes nothing unless owner holds the lease.
func (s *Store) Finish(ctx context.Context, key asyncfn.Key, owner string, p asyncfn.FinishParams) error {
	kind, message := errorArgs(p.Error)
	var q string
	var args []any
	switch p.Outcome {
	case asyncfn.OutcomeRetried:
		q, args = s.q.finishRetry, []any{nullTime(p.RunAfter), kind, message}
	case asyncfn.OutcomeHandedBack:
		q, args = s.q.finishHandBack, []any{nullTime(p.RunAfter)}
	case asyncfn.OutcomeFailed:
		q, args = s.q.finishFailed, []any{kind, message, p.Now, delivered(p), nullTime(p.GraceUntil)}
	default:
		q, args = s.q.finishSucceeded, []any{p.Result, p.Now, delivered(p), nullTime(p.GraceUntil)}
	}
	tag, err := s.exec(ctx, q, append([]any{key.Function, key.BatchID, owner}, args...)...)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return asyncfn.ErrLeaseLost
	}
	return nil
}

func (s *Store) Checkpoint(ctx context.Context, key asyncfn.Key, owner string, now time.Time, rows []asyncfn.SavedRow) error {
	numbers := make([]int32, len(rows))
	values := make([][]byte, len(rows))
	for i, r := range rows {
		numbers[i], values[i] = int32(r.Number), append([]byte{}, r.Value...) // never NULL
	}
	var counted, held bool
	err := s.pool.QueryRow(ctx, s.q.checkpoint, key.Function, key.BatchID, owner, now,
		asyncfn.SavedBytes(rows), asyncfn.MaxSavedBytes, numbers, values).Scan(&counted, &held)
	switch {
	case err != nil:
		return s.err(err)
	case counted:
		return nil
	case held:
		return asyncfn.ErrCheckpointTooLarge
	}
	return asyncfn.ErrLeaseLost
}

func (s *Store) MarkDelivered(ctx context.Context, key asyncfn.Key, now, expiresAt time.Time) error {
	var exists bool
	if err := s.queryRow(ctx, s.q.markDelivered, []any{key.Function, key.BatchID, now, expiresAt}, func(row pgx.Row) error { return row.Scan(&exists) }); err != nil {
		return err
	}
	if !exists {
		return asyncfn.ErrNotFound
	}
	return nil
}

func (s *Store) Sweep(ctx context.Context, now time.Time, limit int) (int, error) {
	tag, err := s.pool.Exec(ctx, s.q.sweep, now, max(limit, 0))
	if err != nil {
		return 0, s.err(err)
	}
	return int(tag.RowsAffected()), nil
}

func (s *Store) Stats(ctx context.Context, now time.Time) (asyncfn.Stats, error) {
	var st asyncfn.Stats
	rows, err := s.pool.Query(ctx, s.q.stats, now)
	if err != nil {
		return st, s.err(err)
	}
	var state string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&state, &n}, func() error {
		st.Add(asyncfn.State(state), n)
		return nil
	})
	return st, s.err(err)
}

// CountQueued counts the queued batches without reading the finished ones.
func (s *Store) CountQueued(ctx context.Context, now time.Time) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, s.q.countQueued, now).Scan(&n)
	return n, s.err(err)
}

// write queues the statement of a state change, as queue makes it, and returns once it
// committed with the others of its group: one round trip, and one implicit transaction,
// for all of them (pgx sends a batch with a single Sync). The callbacks queue gives the
// statement keep what they read and return nil: the group's statements are committed
// whatever one callback thinks of its rows, so an error there must be its call's alone.
func (s *Store) write(ctx context.Context, queue func(b *pgx.Batch)) error {
	return s.group.Do(ctx, func(b *pgx.Batch) error {
		queue(b)
		return nil
	})
}

// exec runs a statement of a state change (see write) and returns its command tag.
func (s *Store) exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	var tag pgconn.CommandTag
	err := s.write(ctx, func(b *pgx.Batch) {
		b.Queue(sql, args...).Exec(func(ct pgconn.CommandTag) error {
			tag = ct
			return nil
		})
	})
	return tag, err
}

// queryRow runs a statement of a state change (see write) that returns a row, which scan
// reads; pgx.ErrNoRows becomes asyncfn.ErrNotFound.
func (s *Store) queryRow(ctx context.Context, sql string, args []any, scan func(row pgx.Row) error) error {
	var scanErr error
	err := s.write(ctx, func(b *pgx.Batch) {
		scanErr = nil
		b.Queue(sql, args...).QueryRow(func(row pgx.Row) error {
			scanErr = scan(row)
			return nil
		})
	})
	if err != nil {
		return err
	}
	return s.err(scanErr)
}
