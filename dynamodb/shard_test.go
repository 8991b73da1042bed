package dynamodb_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/config"
	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/dynamodb"
	"github.com/asyncfn/asyncfn/dynamodb/dyntest"
)

// shardValue is the partition value of shard i in both indexes, as the package
// documentation describes the layout.
func shardValue(i int) string {
	if i == 0 {
		return "q"
	}
	return fmt.Sprint("q", i)
}

// indexCount counts the entries of index under partition attr = value.
func indexCount(t *testing.T, s *dynamodb.Store, index, attr, value string) int {
	t.Helper()
	pages := awsdynamodb.NewQueryPaginator(dynamodb.Client(s), &awsdynamodb.QueryInput{
		TableName:                 aws.String(dynamodb.Table(s)),
		IndexName:                 aws.String(index),
		KeyConditionExpression:    aws.String("#p = :v"),
		ExpressionAttributeNames:  map[string]string{"#p": attr},
		ExpressionAttributeValues: map[string]types.AttributeValue{":v": &types.AttributeValueMemberS{Value: value}},
		Select:                    types.SelectCount,
	})
	n := 0
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += int(page.Count)
	}
	return n
}

// shardEntries counts the entries of each of n shards in the queue and expiry indexes.
func shardEntries(t *testing.T, s *dynamodb.Store, n int) (queue, expiry []int) {
	t.Helper()
	for i := range n {
		queue = append(queue, indexCount(t, s, "queue", "queue", shardValue(i)))
		expiry = append(expiry, indexCount(t, s, "shard_expiry", "shard", shardValue(i)))
	}
	return queue, expiry
}

func mustCreate(t *testing.T, s asyncfn.Store, b *asyncfn.Batch) {
	t.Helper()
	if _, err := s.Create(ctx, b); err != nil {
		t.Fatalf("Create %v: %v", b.Key, err)
	}
}

// batchAt is a small queued batch created at t0 plus i seconds.
func batchAt(id string, i int) *asyncfn.Batch {
	b := newBatch(id, []byte(`{"data":[[0,1]]}`), 1)
	b.CreatedAt = t0.Add(time.Duration(i) * time.Second)
	return b
}

// claimAll claims every claimable batch, limit at a time, and returns their IDs in the
// order claimed, failing on a batch claimed twice.
func claimAll(t *testing.T, s asyncfn.Store, now time.Time, limit int) []string {
	t.Helper()
	var ids []string
	for {
		got, err := s.Claim(ctx, asyncfn.ClaimParams{Owner: "w", Now: now, Lease: time.Hour, Limit: limit})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			return ids
		}
		for _, b := range got {
			if slices.Contains(ids, b.Key.BatchID) {
				t.Fatalf("batch %s claimed twice", b.Key.BatchID)
			}
			ids = append(ids, b.Key.BatchID)
		}
	}
}

// With 4 shards, 200 batches spread over all of them in both indexes, about evenly, and
// a batch's entries stay in its shard while it is claimed and retried; finished, it leaves
// the queue index and stays in its shard of the expiry index.
func TestShardsSpread(t *testing.T) {
	dyntest.Endpoint(t)
	t.Parallel()
	const shards, batches = 4, 200
	s, err := dynamodb.Open(ctx, dyntest.Table(t), dynamodb.Options{Shards: shards})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for i := range batches {
		mustCreate(t, s, batchAt(fmt.Sprint("b", i), i))
	}
	queue, expiry := shardEntries(t, s, shards)
	t.Logf("batches per shard: queue index %v, expiry index %v", queue, expiry)
	total := 0
	for i, n := range queue {
		// Each key lands in a shard with probability 1/4: 50 expected, a standard
		// deviation of about 6; the hash is fixed, so this never flakes.
		if n < batches/shards/2 || n > batches/shards*3/2 {
			t.Errorf("shard %d holds %d of %d batches in the queue index, want about %d", i, n, batches, batches/shards)
		}
		total += n
	}
	if total != batches || !slices.Equal(queue, expiry) {
		t.Fatalf("queue index shards %v, expiry index shards %v: want the same %d batches in both", queue, expiry, batches)
	}
	now := t0.Add(time.Hour)
	claimed := claimAll(t, s, now, 50)
	if len(claimed) != batches {
		t.Fatalf("claimed %d batches, want %d", len(claimed), batches)
	}
	for i, id := range claimed {
		key := asyncfn.Key{Function: "echo", BatchID: id}
		p := asyncfn.Succeed(now, []byte(`{"data":[[0,1]]}`))
		if i%2 == 0 {
			p = asyncfn.Retry(now, &asyncfn.Error{Kind: asyncfn.Retryable, Message: "again"}, now)
		}
		if err := s.Finish(ctx, key, "w", p); err != nil {
			t.Fatal(err)
		}
	}
	queue2, expiry2 := shardEntries(t, s, shards)
	for i := range shards {
		if expiry2[i] != expiry[i] || queue2[i] > queue[i] {
			t.Errorf("shard %d after claims and finishes: queue index %d (was %d), expiry index %d (was %d); want no entry moved",
				i, queue2[i], queue[i], expiry2[i], expiry[i])
		}
	}
	if sum := queue2[0] + queue2[1] + queue2[2] + queue2[3]; sum != batches/2 {
		t.Errorf("queue index holds %d batches after half were retried and half succeeded, want %d", sum, batches/2)
	}
}

// A table written unsharded (shards=1, the layout before shards) and then by a store with 4
// shards is claimed completely by the latter, oldest first across the old batches and the
// new ones, and counted and swept completely.
func TestShardsRaised(t *testing.T) {
	dyntest.Endpoint(t)
	t.Parallel()
	table := dyntest.Table(t)
	one, four := open(t, table), open(t, withShards(t, table, 4))
	const each = 30
	var want []string // IDs by creation time
	for i := range each {
		mustCreate(t, one, batchAt(fmt.Sprint("old", i), 2*i))
		mustCreate(t, four, batchAt(fmt.Sprint("new", i), 2*i+1))
		want = append(want, fmt.Sprint("old", i), fmt.Sprint("new", i))
	}
	if n := indexCount(t, four, "queue", "queue", "q"); n < each {
		t.Fatalf("shard 0 of the queue index holds %d batches, want at least the %d written unsharded", n, each)
	}
	now := t0.Add(time.Hour)
	if st, err := four.Stats(ctx, now); err != nil || st.Queued != 2*each {
		t.Fatalf("Stats = %+v, %v; want %d queued", st, err, 2*each)
	}
	if n, err := four.CountQueued(ctx, now); err != nil || n != 2*each {
		t.Fatalf("CountQueued = %d, %v; want %d", n, err, 2*each)
	}
	if got := claimAll(t, four, now, 7); !slices.Equal(got, want) {
		t.Fatalf("claimed with 4 shards, limit 7 a time:\n%v\nwant every batch, oldest first:\n%v", got, want)
	}
	if n, err := four.Sweep(ctx, t0.Add(13*time.Hour), 1000); err != nil || n != 2*each {
		t.Fatalf("Sweep after expiry = %d, %v; want %d", n, err, 2*each)
	}
	if st, err := one.Stats(ctx, t0); err != nil || st != (asyncfn.Stats{}) {
		t.Fatalf("Stats after the sweep = %+v, %v; want none", st, err)
	}
}

// legacyTable creates a table as CreateTable did before shards, its expiry index keyed on
// sk, deleted when the test ends, and returns its store URL.
func legacyTable(t *testing.T) string {
	t.Helper()
	q := url.Values{"endpoint": {dyntest.Endpoint(t)}, "region": {"us-east-1"}}
	name := fmt.Sprintf("asyncfn-test-legacy-%016x", rand.Uint64())
	storeURL := fmt.Sprintf("dynamodb://%s?%s", name, q.Encode())
	s := open(t, storeURL)
	client := dynamodb.Client(s)
	attr := func(name string, typ types.ScalarAttributeType) types.AttributeDefinition {
		return types.AttributeDefinition{AttributeName: aws.String(name), AttributeType: typ}
	}
	key := func(hash, rng string) []types.KeySchemaElement {
		return []types.KeySchemaElement{
			{AttributeName: aws.String(hash), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(rng), KeyType: types.KeyTypeRange},
		}
	}
	include := func(attrs ...string) *types.Projection {
		return &types.Projection{ProjectionType: types.ProjectionTypeInclude, NonKeyAttributes: attrs}
	}
	_, err := client.CreateTable(ctx, &awsdynamodb.CreateTableInput{
		TableName:   aws.String(name),
		BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{attr("pk", types.ScalarAttributeTypeS), attr("sk", types.ScalarAttributeTypeS),
			attr("queue", types.ScalarAttributeTypeS), attr("created_at", types.ScalarAttributeTypeN), attr("expires_at", types.ScalarAttributeTypeN)},
		KeySchema: key("pk", "sk"),
		GlobalSecondaryIndexes: []types.GlobalSecondaryIndex{
			{IndexName: aws.String("queue"), KeySchema: key("queue", "created_at"),
				Projection: include("state", "run_after", "lease_until", "expires_at", "attempts", "max_attempts")},
			{IndexName: aws.String("expiry"), KeySchema: key("sk", "expires_at"), Projection: include("state")},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.DeleteTable(ctx); err != nil {
			t.Errorf("delete test table: %v", err)
		}
	})
	waiter := awsdynamodb.NewTableExistsWaiter(client, func(o *awsdynamodb.TableExistsWaiterOptions) {
		o.MinDelay = 100 * time.Millisecond
	})
	if err := waiter.Wait(ctx, &awsdynamodb.DescribeTableInput{TableName: aws.String(name)}, time.Minute); err != nil {
		t.Fatal(err)
	}
	return storeURL
}

// A table created before shards, whose expiry index is keyed on sk, works with 4 shards:
// its queue index is sharded, and Sweep and Stats read its expiry index as one partition.
func TestShardsLegacyExpiryIndex(t *testing.T) {
	dyntest.Endpoint(t)
	t.Parallel()
	var logged bytes.Buffer
	s, err := dynamodb.Open(ctx, withShards(t, legacyTable(t), 4), dynamodb.Options{Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	const batches = 20
	var want []string
	for i := range batches {
		mustCreate(t, s, batchAt(fmt.Sprint("b", i), i))
		want = append(want, fmt.Sprint("b", i))
	}
	now := t0.Add(time.Hour)
	if st, err := s.Stats(ctx, now); err != nil || st.Queued != batches {
		t.Fatalf("Stats = %+v, %v; want %d queued", st, err, batches)
	}
	if !strings.Contains(logged.String(), "unsharded expiry index") {
		t.Errorf("log %q does not warn of the unsharded expiry index", logged.String())
	}
	if got := claimAll(t, s, now, 3); !slices.Equal(got, want) {
		t.Fatalf("claimed %v, want %v", got, want)
	}
	if n, err := s.Sweep(ctx, t0.Add(13*time.Hour), 1000); err != nil || n != batches {
		t.Fatalf("Sweep after expiry = %d, %v; want %d", n, err, batches)
	}
	if st, err := s.Stats(ctx, t0); err != nil || st != (asyncfn.Stats{}) {
		t.Fatalf("Stats after the sweep = %+v, %v; want none", st, err)
	}
}

// requestCounter counts the DynamoDB requests of a client, every attempt, and its queries.
type requestCounter struct {
	all, queries atomic.Int64
}

// option adds the counting to a client's middleware, after its retries.
func (c *requestCounter) option() func(*config.LoadOptions) error {
	count := middleware.FinalizeMiddlewareFunc("count", func(ctx context.Context, in middleware.FinalizeInput,
		next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
		c.all.Add(1)
		if awsmiddleware.GetOperationName(ctx) == "Query" {
			c.queries.Add(1)
		}
		return next.HandleFinalize(ctx, in)
	})
	return config.WithAPIOptions([]func(*middleware.Stack) error{func(st *middleware.Stack) error {
		return st.Finalize.Add(count, middleware.After)
	}})
}

// BenchmarkClaim claims 10 batches a time from a queue of 10, with 1 and with 4 shards,
// and reports the DynamoDB requests per Claim (dynalite's times say nothing of DynamoDB's).
func BenchmarkClaim(b *testing.B) {
	dyntest.Endpoint(b)
	const limit = 10
	for _, shards := range []int{1, 4} {
		b.Run(fmt.Sprint("shards=", shards), func(b *testing.B) {
			var c requestCounter
			s, err := dynamodb.Open(ctx, dyntest.Table(b), dynamodb.Options{Shards: shards,
				AWS: []func(*config.LoadOptions) error{c.option()}})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var all, queries int64
			i := 0
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				for range limit {
					i++
					if _, err := s.Create(ctx, batchAt(fmt.Sprint("b", i), i)); err != nil {
						b.Fatal(err)
					}
				}
				now := t0.Add(time.Duration(i+1) * time.Second)
				all0, queries0 := c.all.Load(), c.queries.Load()
				b.StartTimer()
				got, err := s.Claim(ctx, asyncfn.ClaimParams{Owner: "w", Now: now, Lease: time.Hour, Limit: limit})
				b.StopTimer()
				if err != nil || len(got) != limit {
					b.Fatalf("Claim = %d batches, %v; want %d", len(got), err, limit)
				}
				all += c.all.Load() - all0
				queries += c.queries.Load() - queries0
				for _, bt := range got { // finished, they leave the queue index
					if err := s.Finish(ctx, bt.Key, "w", asyncfn.Succeed(now, []byte(`{"data":[[0,1]]}`))); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(all)/float64(b.N), "requests/claim")
			b.ReportMetric(float64(queries)/float64(b.N), "queries/claim")
		})
	}
}
