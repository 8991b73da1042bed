package dynamodb

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/asyncfn/asyncfn"
)

type item = map[string]types.AttributeValue

// Attribute names. Times are numbers of Unix nanoseconds, absent when zero.
const (
	aPK          = "pk"
	aSK          = "sk"
	aTTL         = "ttl" // epoch seconds, for DynamoDB's TTL
	aState       = "state"
	aQueryID     = "query_id"
	aDigest      = "digest"
	aRows        = "rows"
	aAttempts    = "attempts"
	aMaxAttempts = "max_attempts"
	aOwner       = "owner"
	aLeaseUntil  = "lease_until"
	aRunAfter    = "run_after"
	aCreatedAt   = "created_at"
	aStartedAt   = "started_at"
	aFinishedAt  = "finished_at"
	aDeliveredAt = "delivered_at"
	aExpiresAt   = "expires_at"
	aError       = "error"   // a map {kind, message}
	aHeaders     = "headers" // a map of strings, absent when none
	aQueue       = "queue"   // the shard while queued or running: the sparse queue index
	aShard       = "shard"   // the batch's shard (see shardName): the expiry index
	aData        = "data"    // a chunk's bytes
	aPayload     = "payload"
	aResult      = "result"
	aSaved       = "saved"       // the segments of rows saved by Checkpoint: a list of "<id>/<chunks>"
	aSavedBytes  = "saved_bytes" // given to Checkpoint (asyncfn.MaxSavedBytes)
	// A blob split over chunks is named by "<blob>_id" and "<blob>_chunks" in the meta item.
	idSuffix     = "_id"
	chunksSuffix = "_chunks"
)

const (
	skMeta = "meta"
	// maxShards bounds Options.Shards: Claim queries every shard, so each one costs every
	// Claim a request.
	maxShards = 64
	// inlineMax is the largest payload or result kept in the meta item, saving the chunk
	// round trips of small batches. Not more: every read of the meta item (each poll) is
	// charged for its whole size, inline data included.
	inlineMax = 64 << 10
	// chunkSize is the data per chunk item, leaving room under 400 KB for a 2 KB key.
	chunkSize = 350 << 10
	// maxErrorBytes cuts an error message, shown to a SQL user as one sentence, so that a
	// huge one cannot push the meta item over the item limit.
	maxErrorBytes = 16 << 10
	// batchWriteMax and batchGetMax are DynamoDB's limits on items per request.
	batchWriteMax = 25
	batchGetMax   = 100
	// batchTries bounds the requests spent on one BatchWriteItem or BatchGetItem whose
	// items keep coming back unprocessed (throttling).
	batchTries = 10
)

func str(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
func bin(b []byte) types.AttributeValue { return &types.AttributeValueMemberB{Value: b} }

func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

func nanos(t time.Time) types.AttributeValue { return num(t.UnixNano()) }

// ttlOf is t in epoch seconds, rounded up so that TTL never deletes an item before t.
func ttlOf(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

func getS(it item, name string) string {
	if v, ok := it[name].(*types.AttributeValueMemberS); ok {
		return v.Value
	}
	return ""
}

func getN(it item, name string) int64 {
	if v, ok := it[name].(*types.AttributeValueMemberN); ok {
		n, _ := strconv.ParseInt(v.Value, 10, 64)
		return n
	}
	return 0
}

func getT(it item, name string) time.Time {
	if _, ok := it[name]; !ok {
		return time.Time{}
	}
	return time.Unix(0, getN(it, name)).UTC()
}

// pkOf is the partition key of a batch: both parts quoted, so that any characters,
// separators and invalid UTF-8 (which DynamoDB strings cannot hold) map to exactly one
// valid string, and keyOf reads it back.
func pkOf(k asyncfn.Key) string {
	return strconv.Quote(k.Function) + "/" + strconv.Quote(k.BatchID)
}

func keyOf(pk string) (asyncfn.Key, error) {
	if fq, err := strconv.QuotedPrefix(pk); err == nil {
		if iq, ok := strings.CutPrefix(pk[len(fq):], "/"); ok {
			fn, _ := strconv.Unquote(fq)
			if id, err := strconv.Unquote(iq); err == nil {
				return asyncfn.Key{Function: fn, BatchID: id}, nil
			}
		}
	}
	return asyncfn.Key{}, fmt.Errorf("dynamodb: item with partition key %q is not a batch", pk)
}

// shardOf is the shard of the batch at k among n: a hash of its key, the same in every
// process and release, so that a batch's index entries never move between shards.
func shardOf(k asyncfn.Key, n int) int {
	h := fnv.New64a()
	h.Write([]byte(pkOf(k)))
	return int(h.Sum64() % uint64(n))
}

// shardName is the value of the queue and shard attributes in shard i, the partition key
// of both indexes: "q" for shard 0, the one value before shards existed, so that a table
// written unsharded is shard 0 of any shard count; "q1", "q2", ... for the others.
func shardName(i int) string {
	if i == 0 {
		return "q"
	}
	return "q" + strconv.Itoa(i)
}

func metaKey(k asyncfn.Key) item {
	return item{aPK: str(pkOf(k)), aSK: str(skMeta)}
}

func errorValue(e *asyncfn.Error) types.AttributeValue {
	msg := e.Message
	if len(msg) > maxErrorBytes {
		cut := maxErrorBytes
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return &types.AttributeValueMemberM{Value: item{"kind": str(string(e.Kind)), "message": str(msg)}}
}

// metaItem is the meta item of b in shard, without its payload and result (see putBlob).
func metaItem(b *asyncfn.Batch, shard string) item {
	it := item{
		aPK:          str(pkOf(b.Key)),
		aSK:          str(skMeta),
		aTTL:         num(ttlOf(b.ExpiresAt)),
		aState:       str(string(b.State)),
		aDigest:      str(b.Digest),
		aRows:        num(int64(b.Rows)),
		aAttempts:    num(int64(b.Attempts)),
		aMaxAttempts: num(int64(b.MaxAttempts)),
		aCreatedAt:   nanos(b.CreatedAt),
		aExpiresAt:   nanos(b.ExpiresAt),
		aShard:       str(shard),
	}
	if b.QueryID != "" {
		it[aQueryID] = str(b.QueryID)
	}
	if b.Owner != "" {
		it[aOwner] = str(b.Owner)
	}
	for name, t := range map[string]time.Time{aLeaseUntil: b.LeaseUntil, aRunAfter: b.RunAfter,
		aStartedAt: b.StartedAt, aFinishedAt: b.FinishedAt, aDeliveredAt: b.DeliveredAt} {
		if !t.IsZero() {
			it[name] = nanos(t)
		}
	}
	if b.Error != nil {
		it[aError] = errorValue(b.Error)
	}
	if len(b.Headers) > 0 {
		h := item{}
		for name, v := range b.Headers {
			h[name] = str(v)
		}
		it[aHeaders] = &types.AttributeValueMemberM{Value: h}
	}
	if !b.State.Done() {
		it[aQueue] = str(shard)
	}
	return it
}

// decodeMeta is the batch of a meta item, without its payload and result.
func decodeMeta(it item) (*asyncfn.Batch, error) {
	key, err := keyOf(getS(it, aPK))
	if err != nil {
		return nil, err
	}
	b := &asyncfn.Batch{
		Key:         key,
		QueryID:     getS(it, aQueryID),
		State:       asyncfn.State(getS(it, aState)),
		Digest:      getS(it, aDigest),
		Rows:        int(getN(it, aRows)),
		Attempts:    int(getN(it, aAttempts)),
		MaxAttempts: int(getN(it, aMaxAttempts)),
		Owner:       getS(it, aOwner),
		LeaseUntil:  getT(it, aLeaseUntil),
		RunAfter:    getT(it, aRunAfter),
		CreatedAt:   getT(it, aCreatedAt),
		StartedAt:   getT(it, aStartedAt),
		FinishedAt:  getT(it, aFinishedAt),
		DeliveredAt: getT(it, aDeliveredAt),
		ExpiresAt:   getT(it, aExpiresAt),
	}
	if m, ok := it[aError].(*types.AttributeValueMemberM); ok {
		b.Error = &asyncfn.Error{Kind: asyncfn.ErrorKind(getS(m.Value, "kind")), Message: getS(m.Value, "message")}
	}
	if m, ok := it[aHeaders].(*types.AttributeValueMemberM); ok {
		b.Headers = make(map[string]string, len(m.Value))
		for name := range m.Value {
			b.Headers[name] = getS(m.Value, name)
		}
	}
	return b, nil
}

// placeholder finds the attribute names (#name) of an expression.
var placeholder = regexp.MustCompile(`#[a-z_]+`)

// names maps the #name placeholders of exprs to their attribute names. Every name goes
// through a placeholder, so reserved words (state, owner, ttl, ...) never matter, and only
// those used are sent, as DynamoDB requires.
func names(exprs ...string) map[string]string {
	m := map[string]string{}
	for _, e := range exprs {
		for _, p := range placeholder.FindAllString(e, -1) {
			m[p] = p[1:]
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// update builds an UpdateExpression; Set's value placeholders are ":new_<name>", apart from
// the condition's.
type update struct {
	set, remove []string
	values      item
}

func (u *update) Set(name string, v types.AttributeValue) {
	u.set = append(u.set, "#"+name+" = :new_"+name)
	u.values[":new_"+name] = v
}

// SetItem sets every attribute of it.
func (u *update) SetItem(it item) {
	for name, v := range it {
		u.Set(name, v)
	}
}

func (u *update) Remove(names ...string) {
	for _, name := range names {
		u.remove = append(u.remove, "#"+name)
	}
}

func (u *update) String() string {
	var parts []string
	if len(u.set) > 0 {
		parts = append(parts, "SET "+strings.Join(u.set, ", "))
	}
	if len(u.remove) > 0 {
		parts = append(parts, "REMOVE "+strings.Join(u.remove, ", "))
	}
	return strings.Join(parts, " ")
}

// putBlob stores data, a payload or a result (blob names it) of the batch at pk whose
// items expire at ttl, and returns the meta attributes that make it visible: data itself
// if it is small, else the ID and count of the chunk items it has just written.
func (s *Store) putBlob(ctx context.Context, pk, blob string, data []byte, ttl int64) (item, error) {
	if len(data) <= inlineMax {
		return item{blob: bin(data)}, nil
	}
	id, n, err := s.putChunks(ctx, pk, blob, data, ttl)
	if err != nil {
		return nil, err
	}
	return item{blob + idSuffix: str(id), blob + chunksSuffix: num(int64(n))}, nil
}

// putChunks writes data as chunk items of blob, named by a new id, and returns the id and
// how many chunks there are.
func (s *Store) putChunks(ctx context.Context, pk, blob string, data []byte, ttl int64) (string, int, error) {
	id := newID()
	var reqs []types.WriteRequest
	for n := 0; n*chunkSize < len(data); n++ {
		part := data[n*chunkSize : min((n+1)*chunkSize, len(data))]
		reqs = append(reqs, types.WriteRequest{PutRequest: &types.PutRequest{Item: item{
			aPK: str(pk), aSK: str(chunkSK(blob, id, n)), aTTL: num(ttl), aData: bin(part),
		}}})
	}
	if err := s.batchWrite(ctx, reqs); err != nil {
		return "", 0, err
	}
	return id, len(reqs), nil
}

// newID names one write's chunks; it needs to be unique per batch, not secret.
func newID() string { return fmt.Sprintf("%016x", rand.Uint64()) }

func chunkSK(blob, id string, n int) string { return fmt.Sprintf("%s#%s#%d", blob, id, n) }

// chunkKeys are the keys of the chunk items that the meta item it names for blobs.
func chunkKeys(it item, blobs ...string) []item {
	var keys []item
	for _, blob := range blobs {
		keys = append(keys, segmentKeys(it[aPK], blob, getS(it, blob+idSuffix), int(getN(it, blob+chunksSuffix)))...)
	}
	return keys
}

// segmentKeys are the keys of the chunks of blob named id, n of them, in the batch at pk.
func segmentKeys(pk types.AttributeValue, blob, id string, n int) []item {
	keys := make([]item, n)
	for i := range n {
		keys[i] = item{aPK: pk, aSK: str(chunkSK(blob, id, i))}
	}
	return keys
}

// getBlob reads back the blob that the meta item it holds or names; nil if it has none.
// A missing chunk means the batch was removed (swept, or replaced after expiring) while
// being read: ErrNotFound.
func (s *Store) getBlob(ctx context.Context, it item, blob string) ([]byte, error) {
	if v, ok := it[blob].(*types.AttributeValueMemberB); ok {
		return v.Value, nil
	}
	return s.readChunks(ctx, chunkKeys(it, blob), blob)
}

// readChunks reads the chunks at keys, of blob, and joins them; nil if there are none.
func (s *Store) readChunks(ctx context.Context, all []item, blob string) ([]byte, error) {
	keys := all
	if len(keys) == 0 {
		return nil, nil
	}
	data := map[string][]byte{}
	for len(keys) > 0 {
		n := min(len(keys), batchGetMax)
		if err := s.batchGet(ctx, keys[:n], data); err != nil {
			return nil, err
		}
		keys = keys[n:]
	}
	var buf bytes.Buffer
	for _, k := range all {
		part, ok := data[k[aSK].(*types.AttributeValueMemberS).Value]
		if !ok {
			return nil, fmt.Errorf("%w: a chunk of its %s is gone: the batch was removed while being read", asyncfn.ErrNotFound, blob)
		}
		buf.Write(part)
	}
	return buf.Bytes(), nil
}

// deleteChunks deletes the chunks of the payload, result and saved rows that the meta item
// it names.
func (s *Store) deleteChunks(ctx context.Context, it item) error {
	var reqs []types.WriteRequest
	keys := chunkKeys(it, aPayload, aResult)
	for _, seg := range segments(it) {
		keys = append(keys, seg.keys...)
	}
	for _, k := range keys {
		reqs = append(reqs, types.WriteRequest{DeleteRequest: &types.DeleteRequest{Key: k}})
	}
	return s.batchWrite(ctx, reqs)
}

// batchWrite runs reqs in BatchWriteItem requests of at most batchWriteMax items (at most
// 8.75 MiB of chunks, under the 16 MB request limit), retrying unprocessed items with
// backoff.
func (s *Store) batchWrite(ctx context.Context, reqs []types.WriteRequest) error {
	for len(reqs) > 0 {
		n := min(len(reqs), batchWriteMax)
		pending := reqs[:n]
		for try := 0; len(pending) > 0; try++ {
			if try == batchTries {
				return fmt.Errorf("%w: dynamodb: %d items of a batch write stayed unprocessed", asyncfn.ErrUnavailable, len(pending))
			}
			if try > 0 {
				if err := backoff(ctx, try); err != nil {
					return err
				}
			}
			out, err := s.client.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{
				RequestItems: map[string][]types.WriteRequest{s.table: pending},
			})
			if err != nil {
				return errorOf(err, errConditionFailed)
			}
			pending = out.UnprocessedItems[s.table]
		}
		reqs = reqs[n:]
	}
	return nil
}

// batchGet reads the chunk items at keys (at most batchGetMax) with consistent reads into
// data by sort key. Unprocessed keys are asked again at once while a response brings some
// items (a response holds at most 16 MB), after a backoff when it brings none (throttling).
func (s *Store) batchGet(ctx context.Context, keys []item, data map[string][]byte) error {
	for idle := 0; len(keys) > 0; {
		if idle == batchTries {
			return fmt.Errorf("%w: dynamodb: %d chunks stayed unprocessed", asyncfn.ErrUnavailable, len(keys))
		}
		if idle > 0 {
			if err := backoff(ctx, idle); err != nil {
				return err
			}
		}
		out, err := s.client.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{
			RequestItems: map[string]types.KeysAndAttributes{s.table: {
				Keys:                     keys,
				ConsistentRead:           aws.Bool(true),
				ProjectionExpression:     aws.String("#sk, #data"),
				ExpressionAttributeNames: names("#sk, #data"),
			}},
		})
		if err != nil {
			return errorOf(err, errConditionFailed)
		}
		got := out.Responses[s.table]
		for _, it := range got {
			if v, ok := it[aData].(*types.AttributeValueMemberB); ok {
				data[getS(it, aSK)] = v.Value
			}
		}
		if len(got) == 0 {
			idle++
		} else {
			idle = 0
		}
		keys = out.UnprocessedKeys[s.table].Keys
	}
	return nil
}

// backoff sleeps before retry number try: 25 ms doubling up to 1 s, with jitter.
func backoff(ctx context.Context, try int) error {
	d := min(25*time.Millisecond<<min(try-1, 6), time.Second)
	d = d/2 + rand.N(d/2+1)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
