package dynamodb

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
)

// shardNames are the names of the store's shards, starting at a random one: the order in
// which Claim breaks ties and Sweep visits them, so that over many calls no shard comes
// first more often than another.
func (s *Store) shardNames() []string {
	start := rand.IntN(s.shards)
	order := make([]string, s.shards)
	for i := range order {
		order[i] = shardName((start + i) % s.shards)
	}
	return order
}

// legacyRecheck is how long a store that found the index expiry of a table created before
// shards uses it before looking for shard_expiry again, which a migration adds.
const legacyRecheck = 10 * time.Minute

// expiryParts returns the expiry index to query, the attribute that keys it, and the
// partitions of it to query: shard_expiry and the shards or, on a table created before
// shards, expiry and its one partition "meta" (every meta item is there, whatever its
// shard). It finds out which with queries of one entry: on such a table (or while
// shard_expiry is being built), the one on shard_expiry fails validation and the one on
// expiry succeeds. Once found, shard_expiry is kept; expiry for legacyRecheck.
func (s *Store) expiryParts(ctx context.Context) (index, attr string, parts []string, err error) {
	if s.sharded.Load() {
		return expiryIndex, aShard, s.shardNames(), nil
	}
	if at := s.legacyAt.Load(); at != 0 && time.Since(time.Unix(0, at)) < legacyRecheck {
		return legacyExpiryIndex, aSK, []string{skMeta}, nil
	}
	probe := func(index, attr, value string) error {
		keyCond := "#" + attr + " = :v"
		_, err := s.client.Query(ctx, &dynamodb.QueryInput{
			TableName:                 aws.String(s.table),
			IndexName:                 aws.String(index),
			KeyConditionExpression:    aws.String(keyCond),
			ExpressionAttributeNames:  names(keyCond),
			ExpressionAttributeValues: item{":v": str(value)},
			Select:                    types.SelectCount,
			Limit:                     aws.Int32(1),
		})
		return err
	}
	err = probe(expiryIndex, aShard, shardName(0))
	if err == nil {
		s.sharded.Store(true)
		return expiryIndex, aShard, s.shardNames(), nil
	}
	if apiErr := (smithy.APIError)(nil); !errors.As(err, &apiErr) || apiErr.ErrorCode() != "ValidationException" {
		return "", "", nil, errorOf(err, errConditionFailed)
	}
	if err := probe(legacyExpiryIndex, aSK, skMeta); err != nil {
		return "", "", nil, errorOf(err, errConditionFailed)
	}
	if s.legacyAt.Swap(time.Now().UnixNano()) == 0 {
		s.log.WarnContext(ctx, "dynamodb: the table has the unsharded expiry index that create-table made before shards:"+
			" Sweep and Stats read it as one partition, which caps state changes at about 1,000 a second whatever the shards"+
			" (the dynamodb package documentation says how to migrate)",
			"table", s.table)
	}
	return legacyExpiryIndex, aSK, []string{skMeta}, nil
}

// cursor reads one shard of an index a page at a time, in the index's order.
type cursor struct {
	pages *dynamodb.QueryPaginator
	items []item
}

// fill reads pages until the cursor holds an entry or has read its shard through.
func (c *cursor) fill(ctx context.Context) error {
	for len(c.items) == 0 && c.pages.HasMorePages() {
		page, err := c.pages.NextPage(ctx)
		if err != nil {
			return err
		}
		c.items = page.Items
	}
	return nil
}
