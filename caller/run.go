package caller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Outcome is one batch's rows and answer, handed to Run's sink in input order.
type Outcome struct {
	// Index is the batch's 0-based position in the input; FirstRow the 0-based input
	// position of its first row.
	Index, FirstRow int
	Rows            []Row
	Answer          Answer
}

// Run streams rows from in through the service as Snowflake would send them: batches of
// up to MaxBatchRows rows, up to Concurrency at once, and hands each batch's outcome to
// sink in input order as soon as it and every batch before it are done.
//
// Memory stays bounded whatever the input's size: Run holds the batch being read plus at
// most Concurrency batches, in flight or answered and waiting for an earlier one (the
// reorder buffer), and nothing once sink returns.
//
// Like Snowflake, which fails the query, Run stops at the first failed batch, cancels the
// others and returns its *BatchError (wrapped with the input rows it held). A read error
// is returned once the rows read before it have been through. The summary covers the
// batches handed to sink and the one that failed.
func (c *Client) Run(ctx context.Context, in RowReader, sink func(Outcome) error) (Summary, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type pending struct {
		out  Outcome
		err  error
		done chan struct{}
	}
	order := make(chan *pending, c.cfg.Concurrency)
	slots := make(chan struct{}, c.cfg.Concurrency)
	var readErr error
	var calls sync.WaitGroup
	var firstFailure sync.Once
	var failed *pending // the batch whose failure ended the run
	go func() {
		defer close(order)
		first := 0
		for index := 0; ; index++ {
			rows, err := readBatch(in, c.cfg.MaxBatchRows)
			if len(rows) > 0 {
				select {
				case slots <- struct{}{}:
				case <-ctx.Done():
					return
				}
				p := &pending{out: Outcome{Index: index, FirstRow: first, Rows: rows}, done: make(chan struct{})}
				first += len(rows)
				order <- p // never blocks: order holds no more entries than slots
				calls.Go(func() {
					defer close(p.done)
					payload, err := c.Encode(p.out.Rows)
					if err == nil {
						p.out.Answer, err = c.Call(ctx, payload)
					}
					if err != nil {
						p.err = fmt.Errorf("rows %d to %d: %w", p.out.FirstRow+1, p.out.FirstRow+len(p.out.Rows), err)
						firstFailure.Do(func() { failed = p; cancel(p.err) })
					}
				})
			}
			if err != nil {
				if err != io.EOF {
					readErr = fmt.Errorf("reading row %d: %w", first+1, err)
				}
				return
			}
		}
	}()
	var stats Stats
	start := time.Now()
	err := func() error {
		for p := range order {
			<-p.done
			if p.err != nil {
				// The first failure, which may be another batch's: this one's may only be
				// its cancellation.
				return context.Cause(ctx)
			}
			stats.Add(p.out.Answer, nil, len(p.out.Rows))
			if err := sink(p.out); err != nil {
				cancel(err)
				return err
			}
			<-slots
		}
		return nil
	}()
	cancel(err)
	for range order { // the reader stops at ctx.Done, after the row it may be waiting for
	}
	calls.Wait()
	if failed != nil && !errors.Is(failed.err, ErrCanceled) {
		stats.Add(failed.out.Answer, failed.err, len(failed.out.Rows))
	}
	if err == nil {
		err = readErr
	}
	return stats.Summary(time.Since(start)), err
}

// readBatch reads up to n rows; with them, it returns the error that stopped it.
func readBatch(in RowReader, n int) ([]Row, error) {
	rows := make([]Row, 0, min(n, 1024))
	for len(rows) < n {
		row, err := in.Read()
		if err != nil {
			return rows, err
		}
		rows = append(rows, row)
	}
	return rows, nil
}
