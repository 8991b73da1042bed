package dynamodb

import (
	"context"
	"errors"
	"math/rand/v2"

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
	names := make([]string, s.shards)
	for i := range names {
		names[i] = shardName((start + i) % s.shards)
	}
	return names
}

// Layouts of the expiry index, in Store.expiry.
const (
	expiryUnknown int32 = iota
	expirySharded       // keyed on shard, as CreateTable makes it
	expiryLegacy        // keyed on sk, as CreateTable made it before shards: one partition
)

// expiryParts returns the attribute that keys the expiry index and the partitions of it
// to query: the shards, or on a table created before shards, whose index is keyed on sk,
// the one partition "meta" (every meta item is there, whatever its shard). The first call
// finds out which with a query of one entry: one on shard fails validation on such a
// table, where one on sk succeeds.
func (s *Store) expiryParts(ctx context.Context) (string, []string, error) {
	switch s.expiry.Load() {
	case expirySharded:
		return aShard, s.shardNames(), nil
	case expiryLegacy:
		return aSK, []string{skMeta}, nil
	}
	probe := func(attr, value string) error {
		keyCond := "#" + attr + " = :v"
		_, err := s.client.Query(ctx, &dynamodb.QueryInput{
			TableName:                 aws.String(s.table),
			IndexName:                 aws.String(expiryIndex),
			KeyConditionExpression:    aws.String(keyCond),
			ExpressionAttributeNames:  names(keyCond),
			ExpressionAttributeValues: item{":v": str(value)},
			Select:                    types.SelectCount,
			Limit:                     aws.Int32(1),
		})
		return err
	}
	err := probe(aShard, shardName(0))
	if err == nil {
		s.expiry.Store(expirySharded)
		return aShard, s.shardNames(), nil
	}
	if apiErr := (smithy.APIError)(nil); !errors.As(err, &apiErr) || apiErr.ErrorCode() != "ValidationException" {
		return "", nil, errorOf(err, errConditionFailed)
	}
	if err := probe(aSK, skMeta); err != nil {
		return "", nil, errorOf(err, errConditionFailed)
	}
	s.log.WarnContext(ctx, "dynamodb: the table's expiry index is keyed on sk, as create-table made it before shards:"+
		" Sweep and Stats read it as one partition, which caps state changes at about 1,000 a second whatever the shards",
		"table", s.table)
	s.expiry.Store(expiryLegacy)
	return aSK, []string{skMeta}, nil
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
