// Package dynamodb is an asyncfn.Store on Amazon DynamoDB, for the AWS Lambda deployment
// (and for `asyncfn serve`/`asyncfn worker` on AWS). It leans on DynamoDB's own primitives:
// conditional writes decide every race, a TTL attribute removes what expires, and payloads and
// results larger than an item are split over several items.
//
// # Table and items
//
// One table, created by CreateTable (`asyncfn dynamodb create-table`), with partition key
// pk and sort key sk (both strings). A batch is one partition:
//
//   - pk is the batch's key, both parts quoted as Go strings ("fn"/"batch-id"), so any
//     characters, separators or invalid UTF-8 map to exactly one key and back. DynamoDB
//     caps a partition key at 2,048 bytes, which bounds function name plus batch id.
//   - sk "meta": the batch itself, one small item (a few hundred bytes plus inline data):
//     state, times (Unix nanoseconds), attempts, owner, error, digest.
//   - A payload or result of at most 64 KiB is inlined in the meta item (every poll reads
//     that item whole, so more would cost read units on each); a larger one is split
//     into chunk items of at most 350 KiB of data each, sk "payload#ID#N" or "result#ID#N",
//     where ID is random per write and recorded in the meta item with the chunk count.
//     The 10 MB Snowflake limit is 30 chunks; a batch at both limits is 61 items, about
//     20 MB. Chunks are written with BatchWriteItem (25 items, at most 8.75 MiB, per
//     request; unprocessed items retried with backoff) and read back with consistent
//     BatchGetItem, all the chunks of a blob at once.
//   - Every item carries ttl, the batch's ExpiresAt in epoch seconds (rounded up, so TTL
//     never removes a live item), for DynamoDB's TTL to delete. TTL deletes only
//     eventually (typically within days), so every read also compares the meta item's
//     expires_at with the caller's now: an expired batch is invisible before it is deleted.
//
// Chunks are written before the conditional meta write that makes them visible. A write
// that loses its race (a duplicate Create, a Finish whose lease was lost) deletes its chunks
// again, and a Create that replaces an expired batch deletes that batch's; a crash in
// between, or a failure of those deletes, leaves orphan chunks that no meta item names,
// never read, which TTL removes. The random ID keeps a re-created key or a reclaimed batch
// from ever reading another write's chunks. MarkDelivered shortens the meta item's expiry only: the chunks keep the
// retention period's ttl, and since every read starts from the meta item, they cannot be
// served after it has expired.
//
// # Indexes
//
//   - "queue" (GSI): partition queue, sort created_at. The queue attribute is set only while a
//     batch is queued or running (a sparse index), so Claim, used by `asyncfn worker` on
//     DynamoDB, queries the oldest first, filters on state, run_after, lease_until and
//     expires_at (projected), and conditionally updates each candidate until it holds
//     Limit batches. The Lambda worker is told its batch and uses ClaimKey, one UpdateItem.
//     Claim filters functions on the client: a worker for a few functions reads the queue
//     entries of the others.
//   - "shard_expiry" (GSI): partition shard, sort expires_at, state projected. Only meta
//     items have shard, so it holds exactly the batches. Sweep queries it for expired
//     batches and Stats for live ones: O(live batches), a GSI item being about 100 bytes,
//     never a Scan over the chunks.
//
// GSIs are eventually consistent: Claim may miss a batch created a moment ago (the next
// Claim finds it) and Stats may lag slightly; the conditional updates on the table itself
// are what decide.
//
// # Shards
//
// Every batch belongs to one of Options.Shards shards (the store URL's shards=N), chosen by
// a hash of its key, so that it never moves: its meta item's shard attribute, and its
// queue attribute while unfinished, are the shard's name, "q" for shard 0 and "q1", "q2",
// ... for the others. Each shard is one partition key value in both indexes.
//
// Why: DynamoDB serves one partition key value of a table or of a GSI from one partition
// (here the sort keys, created_at and expires_at, grow with time, so every write lands at
// the same end and splitting cannot spread them), and a partition takes at most 1,000
// write units and 3,000 read units a second (AWS, Amazon DynamoDB Developer Guide:
// https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/warm-throughput-scenarios.html
// and https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/throttling-key-range-limit-exceeded-mitigation.html).
// A GSI entry is about 100 bytes, one write unit. Every state change (create, claim,
// finish) writes one entry of each index; a batch that runs once costs the expiry index
// about 6 writes (create, claim, finish, the delivery's new expiry as a delete and a put,
// the sweep) and the queue index 3 plus one per lease extension. So, on the expiry index,
// the busier one:
//
//	shards   index writes/s   state changes/s   batches/s run once
//	     1            1,000             1,000                  ~160
//	     4            4,000             4,000                  ~650
//	     8            8,000             8,000                ~1,300
//	    16           16,000            16,000                ~2,600
//	    64           64,000            64,000               ~10,000
//
// (the table's own partition key values, one per batch, are never the limit; an on-demand table also
// has its account's and its own maximum throughput). These are DynamoDB's limits, not
// measurements: the tests run on dynalite, which has none.
//
// What shards cost: Claim queries every shard, at once, and merges their candidates by
// created_at, so it claims oldest first across all of them as the store contract says (a
// tie goes to the shard met first in an order that starts at a random one): N queries per
// Claim instead of one, each at least half a read unit, also when the queue is empty, and
// the read capacity of a shard bounds the Claim calls of all workers together (about 2,000
// a second of full 100-entry pages), whatever N. Sweep visits the shards one after another
// from a random one until it has deleted its limit; Stats, CountQueued and Overview read
// them all. ClaimKey (the Lambda worker) reads no index.
//
// Changing the count: every process on a table must use the same count. Raising it is
// safe: batches keep the shard they were written in, all below the new count, and a table
// written unsharded (before shards existed, or with shards=1) is shard 0 of any count.
// Lowering it strands the unfinished batches of the dropped shards (no Claim finds them;
// they expire): lower it only once CountQueued and Stats show nothing queued or running.
//
// A table created before shards has, instead of shard_expiry, the index "expiry" keyed on
// sk (every meta item under "meta"). The store finds that out with its first Sweep or
// Stats (a query on shard_expiry fails validation there), logs a warning and reads that one
// partition, looking for shard_expiry again every 10 minutes; its queue index is sharded as
// configured. Such a table stays at about 1,000 expiry index writes a second until it is
// migrated, in place: run this version (every batch it creates carries its shard), add the
// GSI shard_expiry as CreateTable defines it (UpdateTable, or the stack's template: one
// index added per update), which the processes take up within 10 minutes of its being
// active, and delete the GSI expiry once the batches created before are gone (the retention
// period; until then they are in no shard_expiry partition, so Stats does not count them and
// only TTL deletes them). Or create a new table and move to it.
//
// # Conditions
//
//   - Create: PutItem if attribute_not_exists(pk) OR expires_at <= :now; when the condition
//     fails, a consistent GetItem returns the live batch with ErrDuplicate or ErrConflict
//     by digest.
//   - Claim and ClaimKey: UpdateItem if expires_at > :now AND ((state = queued AND run_after
//     <= :now) OR (state = running AND lease_until < :now AND attempts < max_attempts)), so
//     exactly one caller wins; an expired lease with no attempts left is failed by an
//     UpdateItem conditional on attempts >= max_attempts instead.
//   - Extend and Finish: UpdateItem if state = running AND owner = :owner.
//   - MarkDelivered: UpdateItem if expires_at > :now AND attribute_not_exists(delivered_at)
//     AND state IN (succeeded, failed), with AND expires_at > :grace when it also brings
//     the expiry (and the meta item's ttl) forward.
//   - Sweep: DeleteItem of the meta item if expires_at <= :now, so a batch re-created
//     meanwhile survives and concurrent sweepers each count only what they deleted; the
//     deleted meta item names the chunks to delete.
//
// # What dynalite cannot check
//
// The tests run against dynalite, which has no TimeToLive and no transactions. This package
// uses no transactions. What dynalite leaves unexercised is small:
//   - CreateTable's UpdateTimeToLive, whose "unknown operation" answer is logged as a
//     warning, and TTL's deletion itself (reads check expiry anyway, and Sweep deletes);
//   - index lag: dynalite updates its indexes synchronously, so Claim and Sweep meeting
//     stale entries is shown only through concurrent callers failing conditions;
//   - throttling: unprocessed BatchWriteItem items and throttling errors (ErrUnavailable),
//     and the per-partition limits that shards spread (so no figure above is measured);
//   - adding a GSI to a table in place (dynalite ignores UpdateTable's index updates): the
//     migration of a table created before shards is shown in its parts only, the legacy
//     index read as one partition and every batch carrying its shard.
//     Unprocessed BatchGetItem keys do occur, as dynalite answers about 1 MB per request.
package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"

	"github.com/asyncfn/asyncfn"
)

// Options configure a store.
type Options struct {
	// Logger receives what the store tells an operator (a server without TTL). Nil:
	// nothing is logged.
	Logger *slog.Logger
	// AWS adjust the SDK's configuration after the URL's (credentials, retries). Nil:
	// the SDK's defaults.
	AWS []func(*config.LoadOptions) error
	// Shards is the number of partitions that both indexes spread the batches over (see
	// the package documentation), 1 to 64; the store URL's shards parameter sets it too.
	// Zero: the URL's, else 1. Every process on one table must use the same count.
	Shards int
}

// Store is an asyncfn.Store on one DynamoDB table.
type Store struct {
	client *dynamodb.Client
	table  string
	log    *slog.Logger
	closed atomic.Bool
	shards int
	// sharded: the table has shard_expiry (see expiryParts); legacyAt: when it was last
	// found to have the index expiry instead (Unix nanoseconds, 0 never).
	sharded  atomic.Bool
	legacyAt atomic.Int64
}

var _ asyncfn.Store = (*Store)(nil)

// Open returns a store for a URL of the form
// dynamodb://TABLE?region=REGION&endpoint=URL&shards=N. Every parameter is optional: shards
// is Options.Shards (a different non-zero Options.Shards is an error); the region and
// credentials come from the SDK's default chain (environment, shared config, instance or
// task role) and the endpoint from AWS's resolution. A custom endpoint (dynalite, DynamoDB Local) defaults to region us-east-1 and,
// when neither AWS_ACCESS_KEY_ID nor AWS_PROFILE is set, to static dummy credentials, which
// such servers accept.
func Open(ctx context.Context, rawURL string, o Options) (*Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("dynamodb: store URL: %w", err)
	}
	if u.Scheme != "dynamodb" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("dynamodb: store URL %q is not of the form dynamodb://TABLE?region=REGION&endpoint=URL", rawURL)
	}
	q := u.Query()
	for name := range q {
		if name != "region" && name != "endpoint" && name != "shards" {
			return nil, fmt.Errorf("dynamodb: store URL %q: unknown parameter %q (known: region, endpoint, shards)", rawURL, name)
		}
	}
	shards := o.Shards
	if v := q.Get("shards"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxShards {
			return nil, fmt.Errorf("dynamodb: store URL %q: shards=%s is not a number from 1 to %d", rawURL, v, maxShards)
		}
		if shards != 0 && shards != n {
			return nil, fmt.Errorf("dynamodb: store URL %q says shards=%d but Options.Shards is %d", rawURL, n, shards)
		}
		shards = n
	}
	if shards == 0 {
		shards = 1
	}
	if shards < 1 || shards > maxShards {
		return nil, fmt.Errorf("dynamodb: Options.Shards is %d: want 1 to %d", shards, maxShards)
	}
	region, endpoint := q.Get("region"), q.Get("endpoint")
	var opts []func(*config.LoadOptions) error
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	if endpoint != "" && os.Getenv("AWS_ACCESS_KEY_ID") == "" && os.Getenv("AWS_PROFILE") == "" {
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("dummy", "dummy", "")))
	}
	cfg, err := config.LoadDefaultConfig(ctx, append(opts, o.AWS...)...)
	if err != nil {
		return nil, fmt.Errorf("dynamodb: AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		if endpoint == "" {
			return nil, fmt.Errorf("dynamodb: no AWS region: add ?region=... to %q or set AWS_REGION", rawURL)
		}
		cfg.Region = "us-east-1"
	}
	client := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	})
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{client: client, table: u.Host, log: log, shards: shards}, nil
}

// Index names and the attributes the table and its indexes are keyed on.
const (
	queueIndex  = "queue"
	expiryIndex = "shard_expiry"
	// legacyExpiryIndex is the expiry index of tables created before shards, keyed on sk.
	legacyExpiryIndex = "expiry"
)

// CreateTable creates the store's table (on-demand billing) with its two indexes, waits
// until it is active, and turns on TTL for the ttl attribute. Servers that do not implement
// UpdateTimeToLive (dynalite) get a logged warning instead of an error: there nothing
// deletes expired items but Sweep.
func (s *Store) CreateTable(ctx context.Context) error {
	if s.closed.Load() {
		return asyncfn.ErrClosed
	}
	include := func(attrs ...string) *types.Projection {
		return &types.Projection{ProjectionType: types.ProjectionTypeInclude, NonKeyAttributes: attrs}
	}
	_, err := s.client.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:   aws.String(s.table),
		BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String(aPK), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String(aSK), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String(aQueue), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String(aCreatedAt), AttributeType: types.ScalarAttributeTypeN},
			{AttributeName: aws.String(aExpiresAt), AttributeType: types.ScalarAttributeTypeN},
			{AttributeName: aws.String(aShard), AttributeType: types.ScalarAttributeTypeS},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String(aPK), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(aSK), KeyType: types.KeyTypeRange},
		},
		GlobalSecondaryIndexes: []types.GlobalSecondaryIndex{
			{
				IndexName: aws.String(queueIndex),
				KeySchema: []types.KeySchemaElement{
					{AttributeName: aws.String(aQueue), KeyType: types.KeyTypeHash},
					{AttributeName: aws.String(aCreatedAt), KeyType: types.KeyTypeRange},
				},
				Projection: include(aState, aRunAfter, aLeaseUntil, aExpiresAt, aAttempts, aMaxAttempts),
			},
			{
				IndexName: aws.String(expiryIndex),
				KeySchema: []types.KeySchemaElement{
					{AttributeName: aws.String(aShard), KeyType: types.KeyTypeHash},
					{AttributeName: aws.String(aExpiresAt), KeyType: types.KeyTypeRange},
				},
				Projection: include(aState),
			},
		},
	})
	if err != nil {
		return fmt.Errorf("dynamodb: create table %s: %w", s.table, errorOf(err, errConditionFailed))
	}
	waiter := dynamodb.NewTableExistsWaiter(s.client, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay, o.MaxDelay = 100*time.Millisecond, 5*time.Second
	})
	if err := waiter.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(s.table)}, 10*time.Minute); err != nil {
		return fmt.Errorf("dynamodb: table %s did not become active: %w", s.table, err)
	}
	_, err = s.client.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
		TableName: aws.String(s.table),
		TimeToLiveSpecification: &types.TimeToLiveSpecification{
			AttributeName: aws.String(aTTL),
			Enabled:       aws.Bool(true),
		},
	})
	if apiErr := (smithy.APIError)(nil); errors.As(err, &apiErr) && apiErr.ErrorCode() == "UnknownOperationException" {
		s.log.WarnContext(ctx, "dynamodb: the server does not implement UpdateTimeToLive (dynalite?): expired items are removed by Sweep only",
			"table", s.table)
		return nil
	}
	if err != nil {
		return fmt.Errorf("dynamodb: enable TTL on table %s: %w", s.table, errorOf(err, errConditionFailed))
	}
	return nil
}

// DeleteTable deletes the store's table and everything in it, without waiting for the
// deletion to finish.
func (s *Store) DeleteTable(ctx context.Context) error {
	if s.closed.Load() {
		return asyncfn.ErrClosed
	}
	_, err := s.client.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(s.table)})
	if err != nil {
		return fmt.Errorf("dynamodb: delete table %s: %w", s.table, errorOf(err, errConditionFailed))
	}
	return nil
}

// Ping reads a key no batch uses (batch keys are quoted): the cheapest request that shows
// the table answers.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return asyncfn.ErrClosed
	}
	_, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.table),
		Key:       item{aPK: str("ping"), aSK: str(skMeta)},
	})
	return errorOf(err, errConditionFailed)
}

// Close makes every later call return ErrClosed. The SDK client holds nothing to release.
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}

// errConditionFailed is what errorOf returns for a failed condition to callers that look
// further before choosing the sentinel error.
var errConditionFailed = errors.New("dynamodb: condition failed")

// errorOf translates an SDK error into the store contract, in one place: a failed
// condition (ConditionalCheckFailedException, matched by its error code) becomes ifFailed,
// the sentinel that the failed condition means to the caller; throttling, server faults and
// transport failures (after the SDK's own retries) wrap asyncfn.ErrUnavailable; anything
// else (a validation error, a missing table) is a plain error.
func errorOf(err error, ifFailed error) error {
	if err == nil {
		return nil
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "ConditionalCheckFailedException":
			return ifFailed
		case "ProvisionedThroughputExceededException", "RequestLimitExceeded", "ThrottlingException":
			return fmt.Errorf("%w: %w", asyncfn.ErrUnavailable, err)
		}
		if apiErr.ErrorFault() == smithy.FaultServer {
			return fmt.Errorf("%w: %w", asyncfn.ErrUnavailable, err)
		}
		return err
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w: %w", asyncfn.ErrUnavailable, err)
}
