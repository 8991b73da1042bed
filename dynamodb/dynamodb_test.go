package dynamodb_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/dynamodb"
	"github.com/asyncfn/asyncfn/dynamodb/dyntest"
	"github.com/asyncfn/asyncfn/storetest"
)

var ctx = context.Background()

// t0 is the clock origin of these tests: every method is given explicit times.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// newStore opens a store on a table of its own, deleted when the test ends.
func newStore(t *testing.T) *dynamodb.Store {
	t.Helper()
	return open(t, dyntest.Table(t))
}

// open opens a store on storeURL, closed when the test ends.
func open(t *testing.T, storeURL string) *dynamodb.Store {
	t.Helper()
	s, err := dynamodb.Open(ctx, storeURL, dynamodb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// shardCounts are the Options.Shards that the conformance suites run with: the default,
// and several shards, where Claim merges and Sweep and Stats visit them all.
var shardCounts = []int{1, 4}

// withShards is storeURL with its shards parameter set to n.
func withShards(t *testing.T, storeURL string, n int) string {
	t.Helper()
	u, err := url.Parse(storeURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("shards", strconv.Itoa(n))
	u.RawQuery = q.Encode()
	return u.String()
}

// forShards runs fn as a subtest for each of shardCounts.
func forShards(t *testing.T, fn func(t *testing.T, shards int)) {
	dyntest.Endpoint(t) // skips once rather than in every test of the suites
	for _, n := range shardCounts {
		t.Run(fmt.Sprint("shards=", n), func(t *testing.T) { fn(t, n) })
	}
}

func TestConformance(t *testing.T) {
	forShards(t, func(t *testing.T, n int) {
		newStore := func(t *testing.T) asyncfn.Store { return open(t, withShards(t, dyntest.Table(t), n)) }
		storetest.Run(t, newStore)
		storetest.RunClaimOrder(t, newStore)
	})
}

// TestShared opens two stores on one table, as two processes (or Lambda functions) do.
func TestShared(t *testing.T) {
	forShards(t, func(t *testing.T, n int) {
		storetest.RunShared(t, func(t *testing.T) (a, b asyncfn.Store) {
			table := withShards(t, dyntest.Table(t), n)
			return open(t, table), open(t, table)
		})
	})
}

// TestUnreachable cuts the store off the server through a proxy.
func TestUnreachable(t *testing.T) {
	forShards(t, func(t *testing.T, n int) {
		storetest.RunUnreachable(t, func(t *testing.T) (asyncfn.Store, func(), func()) {
			table, err := url.Parse(withShards(t, dyntest.Table(t), n))
			if err != nil {
				t.Fatal(err)
			}
			q := table.Query()
			server, err := url.Parse(q.Get("endpoint"))
			if err != nil {
				t.Fatal(err)
			}
			p := storetest.StartProxy(t, server.Host)
			server.Host = p.Addr()
			q.Set("endpoint", server.String())
			table.RawQuery = q.Encode()
			restore := func() {
				if err := p.Up(); err != nil {
					t.Fatal(err)
				}
			}
			return open(t, table.String()), p.Down, restore
		})
	})
}

// items returns every item of the store's table by sort key, read consistently.
func items(t *testing.T, s *dynamodb.Store) map[string]map[string]types.AttributeValue {
	t.Helper()
	all := map[string]map[string]types.AttributeValue{}
	pages := awsdynamodb.NewScanPaginator(dynamodb.Client(s), &awsdynamodb.ScanInput{
		TableName: aws.String(dynamodb.Table(s)), ConsistentRead: aws.Bool(true),
	})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Items {
			pk := it["pk"].(*types.AttributeValueMemberS).Value
			all[pk+" "+it["sk"].(*types.AttributeValueMemberS).Value] = it
		}
	}
	return all
}

// itemSize is an item's size as DynamoDB counts it: names plus values.
func itemSize(it map[string]types.AttributeValue) int {
	n := 0
	for name, v := range it {
		n += len(name)
		switch v := v.(type) {
		case *types.AttributeValueMemberS:
			n += len(v.Value)
		case *types.AttributeValueMemberN:
			n += len(v.Value)
		case *types.AttributeValueMemberB:
			n += len(v.Value)
		case *types.AttributeValueMemberM:
			n += itemSize(v.Value)
		}
	}
	return n
}

func ttlOf(t *testing.T, it map[string]types.AttributeValue) int64 {
	t.Helper()
	v, ok := it["ttl"].(*types.AttributeValueMemberN)
	if !ok {
		t.Fatalf("item %v has no numeric ttl", it["sk"])
	}
	n, err := strconv.ParseInt(v.Value, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// chunkCount counts the items whose sort key starts with prefix.
func chunkCount(all map[string]map[string]types.AttributeValue, prefix string) int {
	n := 0
	for k := range all {
		if strings.Contains(k, " "+prefix) {
			n++
		}
	}
	return n
}

// longTexts is a Snowflake request body of rows texts of about size bytes each.
func longTexts(rows, size int, seed string) []byte {
	var buf bytes.Buffer
	buf.WriteString(`{"data":[`)
	for i := range rows {
		if i > 0 {
			buf.WriteByte(',')
		}
		text := fmt.Sprintf("%s row %d: ", seed, i)
		for len(text) < size {
			text += fmt.Sprintf("the quick brown fox %d jumps over the lazy dog %x. ", i, i*7919+len(text))
		}
		fmt.Fprintf(&buf, "[%d,%q]", i, text[:size])
	}
	buf.WriteString("]}")
	return buf.Bytes()
}

func newBatch(id string, payload []byte, rows int) *asyncfn.Batch {
	return &asyncfn.Batch{
		Key:         asyncfn.Key{Function: "echo", BatchID: id},
		State:       asyncfn.Queued,
		Payload:     payload,
		Digest:      asyncfn.Digest(payload),
		Rows:        rows,
		MaxAttempts: 3,
		CreatedAt:   t0,
		ExpiresAt:   t0.Add(12 * time.Hour),
	}
}

func claimParams(owner string, now time.Time) asyncfn.ClaimParams {
	return asyncfn.ClaimParams{Owner: owner, Now: now, Lease: 30 * time.Second, Limit: 1}
}

// A 4,096-row batch of long texts, whose payload and result are far above the item limit,
// round-trips intact through chunk items that each stay under it.
func TestLargeBatchRoundTrip(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	payload := longTexts(4096, 200, "payload")
	result := longTexts(4096, 180, "result")
	if len(payload) < 800_000 || len(result) < 700_000 {
		t.Fatalf("test data too small: %d and %d bytes", len(payload), len(result))
	}
	b := newBatch("q:1:1:0:0", payload, 4096)
	if _, err := s.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	claimed, err := s.ClaimKey(ctx, b.Key, claimParams("w", t0))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(claimed.Payload, payload) {
		t.Fatalf("claimed payload of %d bytes differs from the %d bytes created", len(claimed.Payload), len(payload))
	}
	if err := s.Finish(ctx, b.Key, "w", asyncfn.Succeed(t0, result)); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, b.Key, t0, true)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Result, result) || !bytes.Equal(got.Payload, payload) {
		t.Fatalf("read back result %d bytes, payload %d bytes: not the ones written", len(got.Result), len(got.Payload))
	}
	all := items(t, s)
	if p, r := chunkCount(all, "payload#"), chunkCount(all, "result#"); p < 3 || r < 2 || len(all) != 1+p+r {
		t.Fatalf("%d items: %d payload chunks, %d result chunks; want several of each and one meta item", len(all), p, r)
	}
	for k, it := range all {
		if size := itemSize(it); size >= 400_000 {
			t.Errorf("item %s is %d bytes, not under the 400 KB item limit", k, size)
		}
	}
}

// A key re-created after its batch expired shows only the new batch: none of the old
// payload or result chunks, which are deleted, nor its result.
func TestRecreatedExpiredKey(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	old := newBatch("reused", longTexts(3000, 200, "old"), 3000)
	old.ExpiresAt = t0.Add(time.Minute)
	if _, err := s.Create(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimKey(ctx, old.Key, claimParams("w", t0)); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, old.Key, "w", asyncfn.Succeed(t0, longTexts(3000, 150, "old result"))); err != nil {
		t.Fatal(err)
	}

	later := t0.Add(2 * time.Minute)
	fresh := newBatch("reused", longTexts(2000, 200, "new"), 2000) // fewer chunks than the old one
	fresh.CreatedAt, fresh.ExpiresAt = later, later.Add(time.Hour)
	if _, err := s.Create(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, fresh.Key, later, true)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Payload, fresh.Payload) || got.Result != nil || got.State != asyncfn.Queued || got.Rows != 2000 {
		t.Fatalf("re-created batch reads back %d payload bytes (want %d), result %d bytes, state %s, rows %d",
			len(got.Payload), len(fresh.Payload), len(got.Result), got.State, got.Rows)
	}
	all := items(t, s)
	if r := chunkCount(all, "result#"); r != 0 {
		t.Errorf("%d result chunks of the expired batch left", r)
	}
	if p := chunkCount(all, "payload#"); len(all) != 1+p || p != (len(fresh.Payload)+350<<10-1)/(350<<10) {
		t.Errorf("%d items, %d payload chunks: want the new batch's meta and chunks only", len(all), p)
	}
}

// A re-delivered Lambda event claims its batch once, even when both deliveries run at once
// with the same owner.
func TestClaimKeyRedelivered(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	b := newBatch("event", []byte(`{"data":[[0,"x"]]}`), 1)
	if _, err := s.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	var wins, notClaimable int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			_, err := s.ClaimKey(ctx, b.Key, claimParams("request-1", t0))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, asyncfn.ErrNotClaimable):
				notClaimable++
			default:
				t.Errorf("ClaimKey: %v", err)
			}
		})
	}
	wg.Wait()
	if wins != 1 || notClaimable != 1 {
		t.Fatalf("two deliveries: %d wins, %d not claimable; want 1 and 1", wins, notClaimable)
	}
	if err := s.Finish(ctx, b.Key, "request-1", asyncfn.Succeed(t0, []byte(`{"data":[[0,"x"]]}`))); err != nil {
		t.Fatal(err)
	}
	_, err := s.ClaimKey(ctx, b.Key, claimParams("request-1", t0.Add(time.Hour)))
	if !errors.Is(err, asyncfn.ErrNotClaimable) {
		t.Fatalf("ClaimKey of a finished batch: %v, want ErrNotClaimable", err)
	}
	if got, _ := s.Get(ctx, b.Key, t0, false); got.Attempts != 1 {
		t.Fatalf("attempts %d after one winning claim, want 1", got.Attempts)
	}
}

// Every item carries ttl, the batch's ExpiresAt in epoch seconds (rounded up); delivery
// brings the meta item's forward and leaves the chunks' at the retention period.
func TestTTLOnEveryItem(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	b := newBatch("ttl", longTexts(2000, 200, "ttl"), 2000)
	b.ExpiresAt = t0.Add(12*time.Hour + 300*time.Millisecond)
	wantTTL := t0.Add(12*time.Hour).Unix() + 1
	if _, err := s.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimKey(ctx, b.Key, claimParams("w", t0)); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, b.Key, "w", asyncfn.Succeed(t0, longTexts(2000, 150, "result"))); err != nil {
		t.Fatal(err)
	}
	all := items(t, s)
	if chunkCount(all, "payload#") == 0 || chunkCount(all, "result#") == 0 {
		t.Fatalf("no chunks among %d items", len(all))
	}
	for k, it := range all {
		if got := ttlOf(t, it); got != wantTTL {
			t.Errorf("item %s: ttl %d, want %d", k, got, wantTTL)
		}
	}
	grace := t0.Add(10 * time.Minute)
	if err := s.MarkDelivered(ctx, b.Key, t0, grace); err != nil {
		t.Fatal(err)
	}
	for k, it := range items(t, s) {
		want := wantTTL
		if strings.HasSuffix(k, " meta") {
			want = grace.Unix()
		}
		if got := ttlOf(t, it); got != want {
			t.Errorf("after delivery, item %s: ttl %d, want %d", k, got, want)
		}
	}
}

// An expired batch is invisible to every method while its items are still in the table
// (DynamoDB's TTL deletes late, and dynalite never), until Sweep deletes them all.
func TestExpiredInvisibleBeforeDeletion(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	b := newBatch("stale", longTexts(2000, 200, "stale"), 2000)
	b.ExpiresAt = t0.Add(time.Minute)
	if _, err := s.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	now := b.ExpiresAt
	stored := len(items(t, s))
	if stored < 2 {
		t.Fatalf("%d items stored, want a meta item and chunks", stored)
	}
	if _, err := s.Get(ctx, b.Key, now, true); !errors.Is(err, asyncfn.ErrNotFound) {
		t.Errorf("Get: %v, want ErrNotFound", err)
	}
	if _, err := s.ClaimKey(ctx, b.Key, claimParams("w", now)); !errors.Is(err, asyncfn.ErrNotFound) {
		t.Errorf("ClaimKey: %v, want ErrNotFound", err)
	}
	if got, err := s.Claim(ctx, asyncfn.ClaimParams{Owner: "w", Now: now, Lease: time.Second, Limit: 10}); err != nil || len(got) != 0 {
		t.Errorf("Claim: %d batches, %v; want none", len(got), err)
	}
	if err := s.MarkDelivered(ctx, b.Key, now, now.Add(time.Minute)); !errors.Is(err, asyncfn.ErrNotFound) {
		t.Errorf("MarkDelivered: %v, want ErrNotFound", err)
	}
	if st, err := s.Stats(ctx, now); err != nil || st != (asyncfn.Stats{}) {
		t.Errorf("Stats: %+v, %v; want zero", st, err)
	}
	if _, err := s.Create(ctx, newBatch("stale", []byte(`{"data":[]}`), 0)); err == nil {
		// CreatedAt t0 is before the expiry: the old batch is still live then.
		t.Errorf("Create at a time the batch is live succeeded")
	}
	if got := len(items(t, s)); got != stored {
		t.Fatalf("%d items after reading an expired batch, want the %d stored", got, stored)
	}
	if n, err := s.Sweep(ctx, now, 10); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1", n, err)
	}
	if got := items(t, s); len(got) != 0 {
		t.Fatalf("%d items left after Sweep, want none", len(got))
	}
}

// Keys of any bytes, separators and invalid UTF-8 included, come back exactly from Claim,
// which reads them from the partition key.
func TestOddKeys(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	keys := []asyncfn.Key{
		{Function: "a/b", BatchID: "c"},
		{Function: "a", BatchID: "b/c"},
		{Function: `say "hi"`, BatchID: "01b2:1:1:0:0/ü \\ '\x00"},
		{Function: "bin\xff", BatchID: "\xfe\xfd"},
		{Function: "bin\ufffd", BatchID: "\ufffd\ufffd"}, // what \xff would become in a DynamoDB string
	}
	for i, k := range keys {
		b := newBatch("", []byte(fmt.Sprintf(`{"data":[[0,%d]]}`, i)), 1)
		b.Key, b.CreatedAt = k, t0.Add(time.Duration(i)*time.Second)
		if _, err := s.Create(ctx, b); err != nil {
			t.Fatalf("Create(%q): %v", k, err)
		}
	}
	got, err := s.Claim(ctx, asyncfn.ClaimParams{Owner: "w", Now: t0.Add(time.Minute), Lease: time.Minute, Limit: 10})
	if err != nil || len(got) != len(keys) {
		t.Fatalf("Claim = %d batches, %v; want %d", len(got), err, len(keys))
	}
	for i, b := range got {
		if b.Key != keys[i] || string(b.Payload) != fmt.Sprintf(`{"data":[[0,%d]]}`, i) {
			t.Errorf("claim %d: key %q payload %s; want %q", i, b.Key, b.Payload, keys[i])
		}
	}
}

func TestOpenURL(t *testing.T) {
	for _, bad := range []string{
		"postgres://table",
		"dynamodb://",
		"dynamodb://table/extra",
		"dynamodb://table?regoin=us-east-1",
		"dynamodb://table?shards=0",
		"dynamodb://table?shards=65",
		"dynamodb://table?shards=four",
	} {
		if _, err := dynamodb.Open(ctx, bad, dynamodb.Options{}); err == nil {
			t.Errorf("Open(%q) succeeded, want an error", bad)
		}
	}
	if _, err := dynamodb.Open(ctx, "dynamodb://table?region=us-east-1&shards=4", dynamodb.Options{Shards: 8}); err == nil ||
		!strings.Contains(err.Error(), "Options.Shards") {
		t.Errorf("Open with shards=4 and Options.Shards 8: %v, want an error naming Options.Shards", err)
	}
	if _, err := dynamodb.Open(ctx, "dynamodb://table?region=us-east-1", dynamodb.Options{Shards: 65}); err == nil ||
		!strings.Contains(err.Error(), "Options.Shards") {
		t.Errorf("Open with Options.Shards 65: %v, want an error naming Options.Shards", err)
	}
}
