package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/asyncfn/asyncfn"
)

// The claim condition (Claim and ClaimKey) and the lease holder's (Extend and Finish).
const (
	condClaimable = "#expires_at > :now AND ((#state = :queued AND (attribute_not_exists(#run_after) OR #run_after <= :now))" +
		" OR (#state = :running AND #lease_until < :now AND #attempts < #max_attempts)) AND " + condHasPayload
	// condHasPayload: the payload is stored, inline or in chunks (a batch created claimed
	// may wait for it: see asyncfn.Store.Create).
	condHasPayload = "(attribute_exists(#payload) OR attribute_exists(#payload_id))"
	condHeld       = "#state = :running AND #owner = :owner"
)

// pageSize bounds the index entries that one query of Claim or Sweep reads: both usually
// stop after a few.
const pageSize = 100

func stateValue(s asyncfn.State) types.AttributeValue { return str(string(s)) }

func (s *Store) Create(ctx context.Context, b *asyncfn.Batch) (*asyncfn.Batch, error) {
	if s.closed.Load() {
		return nil, asyncfn.ErrClosed
	}
	it := metaItem(b, shardName(shardOf(b.Key, s.shards)))
	put := func(blob string, data []byte) error {
		v, err := s.putBlob(ctx, pkOf(b.Key), blob, data, ttlOf(b.ExpiresAt))
		maps.Copy(it, v)
		return err
	}
	if b.Payload != nil { // nil: created claimed, its payload to come, or finished
		if err := put(aPayload, b.Payload); err != nil {
			return nil, err
		}
	}
	if b.State == asyncfn.Succeeded { // stored as its first attempt left it
		if err := put(aResult, b.Result); err != nil {
			return nil, err
		}
	}
	cond := "attribute_not_exists(#pk) OR #expires_at <= :now"
	// A live batch found by the failed condition may be swept before it is read: then
	// the key is free again and the put is tried again.
	for range 3 {
		out, err := s.client.PutItem(ctx, &dynamodb.PutItemInput{
			TableName:                 aws.String(s.table),
			Item:                      it,
			ConditionExpression:       aws.String(cond),
			ExpressionAttributeNames:  names(cond),
			ExpressionAttributeValues: item{":now": nanos(b.CreatedAt)},
			ReturnValues:              types.ReturnValueAllOld,
		})
		err = errorOf(err, errConditionFailed)
		if err == nil {
			// The expired batch just replaced leaves its chunks: delete them now rather
			// than wait for TTL (best effort: TTL still removes what this misses).
			_ = s.deleteChunks(ctx, out.Attributes)
			return nil, nil
		}
		if !errors.Is(err, errConditionFailed) {
			return nil, err
		}
		old, err := s.get(ctx, b.Key, b.CreatedAt, false)
		if errors.Is(err, asyncfn.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		_ = s.deleteChunks(ctx, it) // this Create's own chunks, never visible (best effort)
		if old.Digest == b.Digest {
			return old, asyncfn.ErrDuplicate
		}
		return old, asyncfn.ErrConflict
	}
	return nil, fmt.Errorf("%w: dynamodb: batch %v kept changing while being created", asyncfn.ErrUnavailable, b.Key)
}

func (s *Store) Get(ctx context.Context, key asyncfn.Key, now time.Time, withPayload bool) (*asyncfn.Batch, error) {
	if s.closed.Load() {
		return nil, asyncfn.ErrClosed
	}
	return s.get(ctx, key, now, withPayload)
}

// get reads the batch at key with a consistent read: ErrNotFound if there is none or it
// has expired at now.
func (s *Store) get(ctx context.Context, key asyncfn.Key, now time.Time, withPayload bool) (*asyncfn.Batch, error) {
	it, err := s.readMeta(ctx, key, "")
	if err != nil {
		return nil, err
	}
	if it == nil || !getT(it, aExpiresAt).After(now) {
		return nil, asyncfn.ErrNotFound
	}
	return s.batchOf(ctx, it, withPayload)
}

// readMeta reads the meta item of the batch at key with a consistent read, only the
// attributes of the projection proj (all if empty); nil if there is none.
func (s *Store) readMeta(ctx context.Context, key asyncfn.Key, proj string) (item, error) {
	in := &dynamodb.GetItemInput{TableName: aws.String(s.table), Key: metaKey(key), ConsistentRead: aws.Bool(true)}
	if proj != "" {
		in.ProjectionExpression, in.ExpressionAttributeNames = aws.String(proj), names(proj)
	}
	out, err := s.client.GetItem(ctx, in)
	if err != nil {
		return nil, errorOf(err, errConditionFailed)
	}
	return out.Item, nil
}

// batchOf decodes a meta item and reads its result, and its payload if withPayload.
func (s *Store) batchOf(ctx context.Context, it item, withPayload bool) (*asyncfn.Batch, error) {
	b, err := decodeMeta(it)
	if err != nil {
		return nil, err
	}
	if b.Result, err = s.getBlob(ctx, it, aResult); err != nil {
		return nil, err
	}
	if withPayload {
		if b.Payload, err = s.getBlob(ctx, it, aPayload); err != nil {
			return nil, err
		}
		if b.Saved, err = s.saved(ctx, it); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Claim queries every shard of the queue index, oldest first, for batches that look
// claimable, and claims them with conditional updates, oldest first across the shards,
// until it holds p.Limit: the shards' first pages are read at once and merged by
// created_at, a tie going to the shard met first in an order that starts at a random one.
// A candidate taken by another worker meanwhile fails its condition and is passed over. It
// serves `asyncfn worker` on DynamoDB; the Lambda worker uses ClaimKey. A failure after some
// claims returns those (their leases would be wasted otherwise); the next Claim meets the
// failure again.
func (s *Store) Claim(ctx context.Context, p asyncfn.ClaimParams) ([]*asyncfn.Batch, error) {
	if s.closed.Load() {
		return nil, asyncfn.ErrClosed
	}
	claimed := []*asyncfn.Batch{}
	if p.Limit <= 0 {
		return claimed, nil
	}
	fail := func(err error) ([]*asyncfn.Batch, error) {
		if len(claimed) > 0 {
			return claimed, nil
		}
		return nil, err
	}
	keyCond := "#queue = :queue"
	filter := "#expires_at > :now AND ((#state = :queued AND (attribute_not_exists(#run_after) OR #run_after <= :now))" +
		" OR (#state = :running AND #lease_until < :now))"
	shards := s.shardNames()
	cursors := make([]*cursor, len(shards))
	errs := make([]error, len(shards))
	var wg sync.WaitGroup
	for i, shard := range shards {
		cursors[i] = &cursor{pages: dynamodb.NewQueryPaginator(s.client, &dynamodb.QueryInput{
			TableName:                aws.String(s.table),
			IndexName:                aws.String(queueIndex),
			KeyConditionExpression:   aws.String(keyCond),
			FilterExpression:         aws.String(filter),
			ExpressionAttributeNames: names(keyCond, filter),
			ExpressionAttributeValues: item{":queue": str(shard), ":now": nanos(p.Now),
				":queued": stateValue(asyncfn.Queued), ":running": stateValue(asyncfn.Running)},
			Limit: aws.Int32(pageSize),
		})}
		wg.Go(func() { errs[i] = cursors[i].fill(ctx) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return fail(errorOf(err, errConditionFailed))
		}
	}
	for {
		var next *cursor // the shard whose next candidate is the oldest
		for _, c := range cursors {
			if err := c.fill(ctx); err != nil {
				return fail(errorOf(err, errConditionFailed))
			}
			if len(c.items) > 0 && (next == nil || getN(c.items[0], aCreatedAt) < getN(next.items[0], aCreatedAt)) {
				next = c
			}
		}
		if next == nil {
			return claimed, nil
		}
		cand := next.items[0]
		next.items = next.items[1:]
		key, err := keyOf(getS(cand, aPK))
		if err != nil {
			return fail(err)
		}
		if len(p.Functions) > 0 && !slices.Contains(p.Functions, key.Function) {
			continue
		}
		if getS(cand, aState) == string(asyncfn.Running) && getN(cand, aAttempts) >= getN(cand, aMaxAttempts) {
			if err := s.abandon(ctx, key, p.Now, int(getN(cand, aAttempts))); err != nil && !errors.Is(err, errConditionFailed) {
				return fail(err)
			}
			continue
		}
		b, err := s.claim(ctx, key, p)
		if errors.Is(err, errConditionFailed) {
			continue
		}
		if err != nil {
			return fail(err)
		}
		if claimed = append(claimed, b); len(claimed) == p.Limit {
			return claimed, nil
		}
	}
}

// ClaimKey tries the claim first, one UpdateItem, and reads the batch only when the
// condition fails, to tell why.
func (s *Store) ClaimKey(ctx context.Context, key asyncfn.Key, p asyncfn.ClaimParams) (*asyncfn.Batch, error) {
	if s.closed.Load() {
		return nil, asyncfn.ErrClosed
	}
	b, err := s.claim(ctx, key, p)
	if !errors.Is(err, errConditionFailed) {
		return b, err
	}
	cur, err := s.get(ctx, key, p.Now, false)
	if err != nil {
		return nil, err
	}
	if cur.State == asyncfn.Running && cur.LeaseUntil.Before(p.Now) && cur.Attempts >= cur.MaxAttempts {
		if err := s.abandon(ctx, key, p.Now, cur.Attempts); err != nil && !errors.Is(err, errConditionFailed) {
			return nil, err
		}
	}
	return nil, asyncfn.ErrNotClaimable
}

// claim leases the batch at key to p.Owner if it is claimable at p.Now and returns it with
// its payload; errConditionFailed if it is not claimable (or not there).
func (s *Store) claim(ctx context.Context, key asyncfn.Key, p asyncfn.ClaimParams) (*asyncfn.Batch, error) {
	upd := "SET #state = :running, #owner = :owner, #lease_until = :lease, #started_at = :now ADD #attempts :one"
	out, err := s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(s.table),
		Key:                      metaKey(key),
		UpdateExpression:         aws.String(upd),
		ConditionExpression:      aws.String(condClaimable),
		ExpressionAttributeNames: names(upd, condClaimable),
		ExpressionAttributeValues: item{":now": nanos(p.Now), ":queued": stateValue(asyncfn.Queued),
			":running": stateValue(asyncfn.Running), ":owner": str(p.Owner),
			":lease": nanos(p.Now.Add(p.Lease)), ":one": num(1)},
		ReturnValues: types.ReturnValueAllNew,
	})
	if err != nil {
		return nil, errorOf(err, errConditionFailed)
	}
	return s.batchOf(ctx, out.Attributes, true)
}

// abandon fails the batch at key if its lease expired before now with no attempts left
// (attempts of them); errConditionFailed if it is not, or no longer, in that state.
func (s *Store) abandon(ctx context.Context, key asyncfn.Key, now time.Time, attempts int) error {
	cond := "#expires_at > :now AND #state = :running AND #lease_until < :now AND #attempts >= #max_attempts AND " + condHasPayload
	u := &update{values: item{":now": nanos(now), ":running": stateValue(asyncfn.Running)}}
	u.Set(aState, stateValue(asyncfn.Failed))
	u.Set(aError, errorValue(asyncfn.AbandonedError(attempts)))
	u.Set(aFinishedAt, nanos(now))
	u.Remove(aOwner, aLeaseUntil, aQueue)
	return s.updateMeta(ctx, key, u, cond, errConditionFailed)
}

// updateMeta applies u to the meta item at key if cond holds; ifFailed if it does not.
func (s *Store) updateMeta(ctx context.Context, key asyncfn.Key, u *update, cond string, ifFailed error) error {
	_, err := s.updateMetaOld(ctx, key, u, cond, ifFailed)
	return err
}

// updateMetaOld is updateMeta that returns the old values of the attributes u changed
// (and the key), to delete the chunks they named.
func (s *Store) updateMetaOld(ctx context.Context, key asyncfn.Key, u *update, cond string, ifFailed error) (item, error) {
	expr := u.String()
	out, err := s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       metaKey(key),
		UpdateExpression:          aws.String(expr),
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeNames:  names(expr, cond),
		ExpressionAttributeValues: u.values,
		ReturnValues:              types.ReturnValueUpdatedOld,
	})
	if err != nil {
		return nil, errorOf(err, ifFailed)
	}
	old := out.Attributes
	if old == nil {
		old = item{}
	}
	old[aPK] = str(pkOf(key))
	return old, nil
}

func (s *Store) Extend(ctx context.Context, key asyncfn.Key, owner string, until time.Time) error {
	if s.closed.Load() {
		return asyncfn.ErrClosed
	}
	u := &update{values: item{":running": stateValue(asyncfn.Running), ":owner": str(owner)}}
	u.Set(aLeaseUntil, nanos(until))
	return s.updateMeta(ctx, key, u, condHeld, asyncfn.ErrLeaseLost)
}

// Finish writes in one conditional update what asyncfn.Finished describes. A result too
// large to inline is written as chunks first; the batch is read before that, for its expiry
// (the chunks' ttl) and to write nothing for a lease already lost.
func (s *Store) Finish(ctx context.Context, key asyncfn.Key, owner string, p asyncfn.FinishParams) error {
	if s.closed.Load() {
		return asyncfn.ErrClosed
	}
	u := &update{values: item{":running": stateValue(asyncfn.Running), ":owner": str(owner)}}
	var result item // the chunks written, to delete if the lease turns out lost
	switch p.Outcome {
	case asyncfn.OutcomeRetried, asyncfn.OutcomeHandedBack:
		u.Set(aState, stateValue(asyncfn.Queued))
		if p.RunAfter.IsZero() {
			u.Remove(aRunAfter)
		} else {
			u.Set(aRunAfter, nanos(p.RunAfter))
		}
		if p.Outcome == asyncfn.OutcomeHandedBack { // interrupted by shutdown: the attempt does not count
			u.set = append(u.set, "#attempts = #attempts - :one")
			u.values[":one"] = num(1)
		} else {
			u.Set(aError, errorValue(p.Error))
		}
		u.Remove(aOwner, aLeaseUntil)
	case asyncfn.OutcomeFailed:
		u.Set(aState, stateValue(asyncfn.Failed))
		u.Set(aError, errorValue(p.Error))
		u.Set(aFinishedAt, nanos(p.Now))
		u.Remove(aOwner, aLeaseUntil, aQueue, aSaved, aSavedBytes)
	default:
		pk := pkOf(key)
		var ttl int64
		if len(p.Result) > inlineMax {
			cur, err := s.readMeta(ctx, key, "#state, #owner, #expires_at")
			if err != nil {
				return err
			}
			if getS(cur, aState) != string(asyncfn.Running) || getS(cur, aOwner) != owner {
				return asyncfn.ErrLeaseLost
			}
			ttl = ttlOf(getT(cur, aExpiresAt))
		}
		blob, err := s.putBlob(ctx, pk, aResult, p.Result, ttl)
		if err != nil {
			return err
		}
		result = maps.Clone(blob)
		result[aPK] = str(pk)
		u.SetItem(blob)
		u.Set(aState, stateValue(asyncfn.Succeeded))
		u.Set(aFinishedAt, nanos(p.Now))
		u.Remove(aOwner, aLeaseUntil, aQueue, aError, aSaved, aSavedBytes)
	}
	old, err := s.updateMetaOld(ctx, key, u, condHeld, asyncfn.ErrLeaseLost)
	if errors.Is(err, asyncfn.ErrLeaseLost) && result != nil {
		_ = s.deleteChunks(ctx, result) // never visible (best effort: TTL removes them too)
	}
	if err == nil && p.Outcome.Final() && old[aSaved] != nil {
		// A finished batch has no more use for its saved rows (best effort: TTL removes
		// them too).
		_ = s.deleteChunks(ctx, item{aPK: old[aPK], aSaved: old[aSaved]})
	}
	if err == nil && p.Outcome.Final() && !p.GraceUntil.IsZero() {
		// A second update: an update expression cannot take the earlier of two expiry
		// times. Best effort, as the front end's own MarkDelivered: a delivery not
		// recorded only keeps the batch until its retention ends.
		_ = s.MarkDelivered(ctx, key, p.Now, p.GraceUntil)
	}
	return err
}

// MarkDelivered first tries the usual case, a grace period shorter than the retention, in
// one conditional update; when that condition fails it reads the batch to tell why.
func (s *Store) MarkDelivered(ctx context.Context, key asyncfn.Key, now, expiresAt time.Time) error {
	if s.closed.Load() {
		return asyncfn.ErrClosed
	}
	cond := "#expires_at > :now AND attribute_not_exists(#delivered_at) AND #state IN (:succeeded, :failed)"
	values := func() item {
		return item{":now": nanos(now), ":succeeded": stateValue(asyncfn.Succeeded), ":failed": stateValue(asyncfn.Failed)}
	}
	u := &update{values: values()}
	u.Set(aDeliveredAt, nanos(now))
	u.Set(aExpiresAt, nanos(expiresAt))
	u.Set(aTTL, num(ttlOf(expiresAt)))
	u.values[":grace"] = nanos(expiresAt)
	err := s.updateMeta(ctx, key, u, cond+" AND #expires_at > :grace", errConditionFailed)
	if !errors.Is(err, errConditionFailed) {
		return err
	}
	b, err := s.get(ctx, key, now, false)
	if err != nil || !b.State.Done() || !b.DeliveredAt.IsZero() {
		return err
	}
	// The grace period ends after the retention: record the delivery, keep the expiry.
	u = &update{values: values()}
	u.Set(aDeliveredAt, nanos(now))
	if err := s.updateMeta(ctx, key, u, cond, errConditionFailed); !errors.Is(err, errConditionFailed) {
		return err
	}
	return nil // another caller recorded the delivery first
}

// Sweep queries the expiry index for expired batches, shard after shard from a random one
// until it has deleted limit, and deletes each meta item on condition that it is still
// expired, then its chunks. A batch deleted by a concurrent sweeper, or re-created
// meanwhile, fails the condition and is not counted. In production DynamoDB's TTL deletes
// most expired items first; Sweep removes those it has not reached yet. Orphan chunks,
// which no meta item names, are left to TTL.
func (s *Store) Sweep(ctx context.Context, now time.Time, limit int) (int, error) {
	if s.closed.Load() {
		return 0, asyncfn.ErrClosed
	}
	n := 0
	if limit <= 0 {
		return n, nil
	}
	index, attr, parts, err := s.expiryParts(ctx)
	if err != nil {
		return n, err
	}
	keyCond := "#" + attr + " = :part AND #expires_at <= :now"
	cond := "#expires_at <= :now"
	for _, part := range parts {
		pages := dynamodb.NewQueryPaginator(s.client, &dynamodb.QueryInput{
			TableName:                 aws.String(s.table),
			IndexName:                 aws.String(index),
			KeyConditionExpression:    aws.String(keyCond),
			ExpressionAttributeNames:  names(keyCond),
			ExpressionAttributeValues: item{":part": str(part), ":now": nanos(now)},
			Limit:                     aws.Int32(int32(min(limit, pageSize))),
		})
		for pages.HasMorePages() {
			page, err := pages.NextPage(ctx)
			if err != nil {
				return n, errorOf(err, errConditionFailed)
			}
			for _, cand := range page.Items {
				out, err := s.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{
					TableName:                 aws.String(s.table),
					Key:                       item{aPK: cand[aPK], aSK: str(skMeta)},
					ConditionExpression:       aws.String(cond),
					ExpressionAttributeNames:  names(cond),
					ExpressionAttributeValues: item{":now": nanos(now)},
					ReturnValues:              types.ReturnValueAllOld,
				})
				err = errorOf(err, errConditionFailed)
				if errors.Is(err, errConditionFailed) {
					continue
				}
				if err != nil {
					return n, err
				}
				n++
				if err := s.deleteChunks(ctx, out.Attributes); err != nil {
					return n, err
				}
				if n == limit {
					return n, nil
				}
			}
		}
	}
	return n, nil
}

// Stats reads the state of every live batch from every shard of the expiry index: one
// small entry per batch, about 10,000 per request; the counts may lag the table by the
// index's delay.
func (s *Store) Stats(ctx context.Context, now time.Time) (asyncfn.Stats, error) {
	var st asyncfn.Stats
	if s.closed.Load() {
		return st, asyncfn.ErrClosed
	}
	index, attr, parts, err := s.expiryParts(ctx)
	if err != nil {
		return st, err
	}
	keyCond := "#" + attr + " = :part AND #expires_at > :now"
	proj := "#state"
	for _, part := range parts {
		pages := dynamodb.NewQueryPaginator(s.client, &dynamodb.QueryInput{
			TableName:                 aws.String(s.table),
			IndexName:                 aws.String(index),
			KeyConditionExpression:    aws.String(keyCond),
			ProjectionExpression:      aws.String(proj),
			ExpressionAttributeNames:  names(keyCond, proj),
			ExpressionAttributeValues: item{":part": str(part), ":now": nanos(now)},
		})
		for pages.HasMorePages() {
			page, err := pages.NextPage(ctx)
			if err != nil {
				return asyncfn.Stats{}, errorOf(err, errConditionFailed)
			}
			for _, it := range page.Items {
				st.Add(asyncfn.State(getS(it, aState)), 1)
			}
		}
	}
	return st, nil
}

// CountQueued queries every shard of the sparse queue index, which holds the unfinished
// batches only, for the queued ones; finished batches are never read.
func (s *Store) CountQueued(ctx context.Context, now time.Time) (int, error) {
	if s.closed.Load() {
		return 0, asyncfn.ErrClosed
	}
	keyCond := "#queue = :queue"
	filter := "#expires_at > :now AND #state = :queued"
	n := 0
	for _, shard := range s.shardNames() {
		pages := dynamodb.NewQueryPaginator(s.client, &dynamodb.QueryInput{
			TableName:                 aws.String(s.table),
			IndexName:                 aws.String(queueIndex),
			KeyConditionExpression:    aws.String(keyCond),
			FilterExpression:          aws.String(filter),
			ExpressionAttributeNames:  names(keyCond, filter),
			ExpressionAttributeValues: item{":queue": str(shard), ":now": nanos(now), ":queued": stateValue(asyncfn.Queued)},
			Select:                    types.SelectCount,
		})
		for pages.HasMorePages() {
			page, err := pages.NextPage(ctx)
			if err != nil {
				return 0, errorOf(err, errConditionFailed)
			}
			n += int(page.Count)
		}
	}
	return n, nil
}

func (s *Store) SavePayload(ctx context.Context, key asyncfn.Key, now time.Time, payload []byte) error {
	if s.closed.Load() {
		return asyncfn.ErrClosed
	}
	it, err := s.readMeta(ctx, key, "")
	if err != nil {
		return err
	}
	if it == nil || !getT(it, aExpiresAt).After(now) {
		return asyncfn.ErrNotFound
	}
	if _, inline := it[aPayload]; inline {
		return nil
	}
	if _, chunked := it[aPayload+idSuffix]; chunked {
		return nil
	}
	attrs, err := s.putBlob(ctx, pkOf(key), aPayload, payload, getN(it, aTTL))
	if err != nil {
		return err
	}
	u := &update{values: item{":now": nanos(now)}}
	u.SetItem(attrs)
	cond := "#expires_at > :now AND attribute_not_exists(#payload) AND attribute_not_exists(#payload_id)"
	err = s.updateMeta(ctx, key, u, cond, errConditionFailed)
	if !errors.Is(err, errConditionFailed) {
		return err
	}
	// Another SavePayload came first, or the batch expired meanwhile: drop these chunks.
	attrs[aPK] = str(pkOf(key))
	_ = s.deleteChunks(ctx, attrs)
	if _, err := s.get(ctx, key, now, false); err != nil {
		return err
	}
	return nil
}
