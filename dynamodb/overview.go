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

// overviewCap bounds the queue index entries one Overview reads: about 100 bytes each, so
// at most a few requests of 1 MB.
const overviewCap = 10_000

// Overview counts the queued and running batches per function, and finds the oldest
// queued one, from the sparse queue index, which holds the unfinished batches only, oldest
// first, reading at most overviewCap entries (Partial says when there were more: the
// newest are then not counted). Finished batches are not counted and failures not listed:
// no index of this table is ordered by finish time, and reading every finished batch kept
// for the retention period is what an overview must not do; Partial says so.
func (s *Store) Overview(ctx context.Context, now time.Time, p asyncfn.OverviewParams) (*asyncfn.Overview, error) {
	if s.closed.Load() {
		return nil, asyncfn.ErrClosed
	}
	p = p.Normalized()
	keyCond := "#queue = :queue"
	filter := "#expires_at > :now"
	proj := "#pk, #state, #created_at"
	pages := dynamodb.NewQueryPaginator(s.client, &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		IndexName:                 aws.String(queueIndex),
		KeyConditionExpression:    aws.String(keyCond),
		FilterExpression:          aws.String(filter),
		ProjectionExpression:      aws.String(proj),
		ExpressionAttributeNames:  names(keyCond, filter, proj),
		ExpressionAttributeValues: item{":queue": str(queueAll), ":now": nanos(now)},
		Limit:                     aws.Int32(overviewCap),
	})
	var fb asyncfn.OverviewBuilder
	read := 0
	for read < overviewCap && pages.HasMorePages() {
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
	partial := "DynamoDB has no index by finish time: batches finished lately and failures are not counted here."
	if read >= overviewCap && pages.HasMorePages() {
		partial = fmt.Sprintf("Only the oldest %d unfinished batches were counted. %s", overviewCap, partial)
	}
	return &asyncfn.Overview{Window: p.Window, Functions: fb.Build(), Failures: []asyncfn.FailureOverview{}, Partial: partial}, nil
}
