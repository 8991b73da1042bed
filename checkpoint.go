package asyncfn

import "context"

type rowDoneKey struct{}

// RowDoneFunc receives the final value of one row of the batch a function runs on.
type RowDoneFunc func(number int, value any)

// WithRowDone returns ctx carrying fn, which RowDone calls: how the runtime learns of rows
// answered before the function returns, to save them in a checkpoint.
func WithRowDone(ctx context.Context, fn RowDoneFunc) context.Context {
	return context.WithValue(ctx, rowDoneKey{}, fn)
}

// RowDone tells the runtime that the row numbered number (Row.Number) has its final value
// (encoded as Call's values are), so that it may be saved before the batch finishes: an
// attempt after a crash, a lost lease or a shutdown then calls the function only for the
// rows not saved. A function that calls an API once per row calls it as each row
// completes; the value must be the one Call then returns for the row. It does nothing
// when the function runs without checkpoints. Safe for concurrent use.
func RowDone(ctx context.Context, number int, value any) {
	if fn, ok := ctx.Value(rowDoneKey{}).(RowDoneFunc); ok {
		fn(number, value)
	}
}
