package dynamodb

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/asyncfn/asyncfn"
)

var _ asyncfn.Overviewer = (*Store)(nil)

// overviewCap bounds the queue index entries one Overview reads, over all shards: about
// 100 bytes each, so at most a few requests of 1 MB.
const overviewCap = 10_000

// Overview counts the queued and running batches per function, and finds the oldest
// queued one, from every shard of the sparse queue index, which holds the unfinished
// batches only, oldest first, reading at most overviewCap entries (an equal share per
// shard; Partial says when a shard had more: its newest are then not counted). Finished
// batches are not counted and failures not listed: no index of this table is ordered by
// finish time, and reading every finished batch kept for the retention period is what an
// overview must not do; Partial says so.
func (s *Store) Overview(ctx context.Context, now time.Time, p asyncfn.OverviewParams) (*asyncfn.Overview, error) {
	if s.closed.Load() {
		return nil, asyncfn.ErrClosed
	}
	p = p.Normalized()
	keyCond := "#queue = :queue"
	filter := "#expires_at > :now"
	proj := "#pk, #state, #created_at"
	share := (overviewCap + s.shards - 1) / s.shards
	var fb asyncfn.OverviewBuilder
	cut := false // a shard had more than its share
	for _, shard := range s.shardNames() {
		pages := dynamodb.NewQueryPaginator(s.client, &dynamodb.QueryInput{
			TableName:                 aws.String(s.table),
			IndexName:                 aws.String(queueIndex),
			KeyConditionExpression:    aws.String(keyCond),
			FilterExpression:          aws.String(filter),
			ProjectionExpression:      aws.String(proj),
			ExpressionAttributeNames:  names(keyCond, filter, proj),
			ExpressionAttributeValues: item{":queue": str(shard), ":now": nanos(now)},
			Limit:                     aws.Int32(int32(share)),
		})
		read := 0
		for read < share && pages.HasMorePages() {
			page, err := pages.NextPage(ctx)
			if err != nil {
				return nil, errorOf(err, errConditionFailed)
			}
			read += int(page.ScannedCount)
			for _, it := range page.Items {
				key, err := keyOf(getS(it, aPK))
				if err != nil {
					return nil, err
				}
				if asyncfn.State(getS(it, aState)) == asyncfn.Queued {
					fb.Queued(key.Function, 1, getT(it, aCreatedAt))
				} else {
					fb.Function(key.Function).Running++
				}
			}
		}
		cut = cut || (read >= share && pages.HasMorePages())
	}
	partial := "DynamoDB has no index by finish time: batches finished lately and failures are not counted here."
	switch {
	case cut && s.shards == 1:
		partial = fmt.Sprintf("Only the oldest %d unfinished batches were counted. %s", share, partial)
	case cut:
		partial = fmt.Sprintf("Only the oldest %d unfinished batches of each of the %d shards were counted. %s", share, s.shards, partial)
	}
	return &asyncfn.Overview{Window: p.Window, Functions: fb.Build(), Failures: []asyncfn.FailureOverview{}, Partial: partial}, nil
}
