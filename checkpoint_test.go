package asyncfn_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/memory"
	"github.com/asyncfn/asyncfn/storetest"
)

// checkpointBody is a batch of n rows, each with one argument.
func checkpointBody(n int) string {
	rows := make([]string, n)
	for i := range rows {
		rows[i] = fmt.Sprintf(`[%d,"<row %d> é"]`, i, i)
	}
	return `{"data":[` + strings.Join(rows, ",") + `]}`
}

// valueOf is the value of a row: values of every kind EncodeResult encodes differently
// (an echo of the argument, HTML characters left unescaped, a map, a float, NULL).
func valueOf(r asyncfn.Row) any {
	switch r.Number % 5 {
	case 0:
		return r.Args[0]
	case 1:
		return "<&> " + string(r.Args[0])
	case 2:
		return map[string]any{"n": r.Number, "z": []int{1, 2}}
	case 3:
		return float64(r.Number) / 3
	}
	return nil
}

// wantResult is the answer of an uninterrupted run on the n rows of checkpointBody.
func wantResult(t *testing.T, n int) string {
	t.Helper()
	rows, err := asyncfn.ParseRows([]byte(checkpointBody(n)))
	if err != nil {
		t.Fatal(err)
	}
	values := make([]any, len(rows))
	for i, r := range rows {
		values[i] = valueOf(r)
	}
	result, err := asyncfn.EncodeResult(rows, values)
	if err != nil {
		t.Fatal(err)
	}
	return string(result)
}

// perRow is a function that answers rows one at a time and reports each with RowDone;
// each call records the numbers of the rows it was given, and stop, if it returns an error
// for a row, ends the call there with it.
type perRow struct {
	mu    sync.Mutex
	calls [][]int
	stop  func(call, row int) error
}

func (f *perRow) Call(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
	f.mu.Lock()
	call := len(f.calls)
	var numbers []int
	for _, r := range rows {
		numbers = append(numbers, r.Number)
	}
	f.calls = append(f.calls, numbers)
	f.mu.Unlock()
	out := make([]any, len(rows))
	for i, r := range rows {
		if err := f.stop(call, i); err != nil {
			return nil, err
		}
		out[i] = valueOf(r)
		asyncfn.RowDone(ctx, r.Number, out[i])
	}
	return out, nil
}

func (f *perRow) called() [][]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// wantSecondCall fails unless the second call was given exactly the rows from `from` on.
func wantSecondCall(t *testing.T, f *perRow, rows, from int) {
	t.Helper()
	calls := f.called()
	var want []int
	for i := from; i < rows; i++ {
		want = append(want, i)
	}
	if len(calls) != 2 || !slices.Equal(calls[1], want) {
		t.Fatalf("the function was given rows %v, want all %d rows then rows %v", calls, rows, want)
	}
}

func savedOf(t *testing.T, s asyncfn.Store, key asyncfn.Key) []asyncfn.SavedRow {
	t.Helper()
	b, err := s.Get(context.Background(), key, time.Now(), true)
	if err != nil {
		t.Fatal(err)
	}
	return b.Saved
}

// TestCheckpointRetrySkipsSavedRows: a batch that fails with a retryable error after some
// rows were reported is retried with only the others, and answers byte for byte as an
// uninterrupted run.
func TestCheckpointRetrySkipsSavedRows(t *testing.T) {
	t.Parallel()
	const n, failAt = 23, 17
	f := &perRow{stop: func(call, row int) error {
		if call == 0 && row == failAt {
			return asyncfn.RetryableError(errors.New("throttled"))
		}
		return nil
	}}
	l := newLib(t, memory.New(), asyncfn.Function{Name: "f", Func: f, Backoff: time.Millisecond,
		Checkpoint: asyncfn.CheckpointConfig{Rows: 5}})
	l.startPool(time.Second, nil)
	if status, body := l.do(http.MethodPost, "f", "b1", checkpointBody(n)); status != http.StatusAccepted {
		t.Fatalf("POST = %d %s", status, body)
	}
	if status, body := l.pollFor("f", "b1"); status != http.StatusOK || body != wantResult(t, n) {
		t.Fatalf("GET = %d %s\nwant %s", status, body, wantResult(t, n))
	}
	wantSecondCall(t, f, n, failAt)
}

// TestCheckpointHandBackKeepsRows: rows reported but not yet saved when shutdown hands the
// batch back are saved first; a row reported twice keeps its first value and a row not in
// the batch is ignored. The next worker runs the others only.
func TestCheckpointHandBackKeepsRows(t *testing.T) {
	t.Parallel()
	const n, blockAt = 12, 7
	reported := make(chan struct{})
	f := &perRow{}
	f.stop = func(call, row int) error {
		if call == 0 && row == blockAt {
			close(reported)
			select {} // until the pool gives up on it
		}
		return nil
	}
	blocking := asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
		asyncfn.RowDone(ctx, n+5, "not a row")
		done := make(chan struct{})
		var values []any
		var err error
		go func() { defer close(done); values, err = f.Call(ctx, rows) }()
		select {
		case <-done:
			asyncfn.RowDone(ctx, 0, "a second value")
			return values, err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	store := memory.New()
	// Neither a row count nor an interval is reached: only the hand-back saves.
	fn := asyncfn.Function{Name: "f", Func: blocking, Checkpoint: asyncfn.CheckpointConfig{Rows: 1000, Interval: time.Hour}}
	l := newLib(t, store, fn)
	pool := l.startPool(time.Second, func(c *asyncfn.PoolConfig) { c.ShutdownTimeout = 10 * time.Millisecond })
	if status, body := l.do(http.MethodPost, "f", "b1", checkpointBody(n)); status != http.StatusAccepted {
		t.Fatalf("POST = %d %s", status, body)
	}
	<-reported
	pool.Stop()
	key := asyncfn.Key{Function: "f", BatchID: "b1"}
	saved := savedOf(t, store, key)
	if len(saved) != blockAt || saved[0].Number != 0 || string(saved[0].Value) != `"<row 0> é"` {
		t.Fatalf("rows saved at the hand-back: %+v; want rows 0 to %d", saved, blockAt-1)
	}
	f.stop = func(int, int) error { return nil }
	l2 := newLib(t, store, asyncfn.Function{Name: "f", Func: f, Checkpoint: fn.Checkpoint})
	l2.startPool(time.Second, nil)
	if status, body := l2.pollFor("f", "b1"); status != http.StatusOK || body != wantResult(t, n) {
		t.Fatalf("GET = %d %s\nwant %s", status, body, wantResult(t, n))
	}
	wantSecondCall(t, f, n, blockAt)
}

// TestCheckpointLeaseLost: a worker cut off from its lease (its heartbeats fail) keeps
// saving rows until another worker claims the batch; its next checkpoint then cancels it,
// and the new worker runs only the rows not saved.
func TestCheckpointLeaseLost(t *testing.T) {
	t.Parallel()
	const n = 40
	store := memory.New()
	cutOff := storetest.NewFaulty(store)
	cutOff.Fail(asyncfn.ErrUnavailable, storetest.OpExtend)
	key := asyncfn.Key{Function: "f", BatchID: "b1"}
	cancelled := make(chan error, 1)
	f := &perRow{}
	f.stop = func(call, row int) error {
		if call == 0 && row == 10 {
			for deadline := time.Now().Add(10 * time.Second); len(savedOf(t, store, key)) < 10 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			_, err := store.ClaimKey(context.Background(), key, asyncfn.ClaimParams{Owner: "other", Now: time.Now().Add(time.Hour), Lease: time.Hour, Limit: 1})
			if err != nil {
				t.Errorf("claim by another worker: %v", err)
			}
			if err := store.Finish(context.Background(), key, "other", asyncfn.HandBack(time.Now(), time.Now())); err != nil {
				t.Error(err)
			}
		}
		return nil
	}
	slowly := asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
		values, err := f.Call(ctx, rows)
		if len(f.called()) == 1 {
			<-ctx.Done()
			cancelled <- context.Cause(ctx)
			return nil, ctx.Err()
		}
		return values, err
	})
	fn := asyncfn.Function{Name: "f", Func: slowly, Checkpoint: asyncfn.CheckpointConfig{Rows: 1, Interval: time.Millisecond}}
	l := newLib(t, cutOff, fn)
	l.startPool(time.Hour, nil)
	if status, body := l.do(http.MethodPost, "f", "b1", checkpointBody(n)); status != http.StatusAccepted {
		t.Fatalf("POST = %d %s", status, body)
	}
	select {
	case err := <-cancelled:
		if !errors.Is(err, asyncfn.ErrLeaseLost) {
			t.Fatalf("the run was cancelled by %v, want ErrLeaseLost", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the run was not cancelled when its checkpoint found the lease lost")
	}
	if status, body := l.pollFor("f", "b1"); status != http.StatusOK || body != wantResult(t, n) {
		t.Fatalf("GET = %d %s\nwant %s", status, body, wantResult(t, n))
	}
	calls := f.called()
	if len(calls) != 2 || len(calls[1]) == 0 || calls[1][0] < 10 || len(calls[1]) != n-calls[1][0] {
		t.Fatalf("the function was given rows %v; want all, then only those not saved (from row 10 or later)", calls)
	}
}

// TestCheckpointWriteFails: checkpoints that cannot be written do not fail the batch.
func TestCheckpointWriteFails(t *testing.T) {
	t.Parallel()
	const n = 9
	store := storetest.NewFaulty(memory.New())
	store.Fail(asyncfn.ErrUnavailable, storetest.OpCheckpoint)
	f := &perRow{stop: func(int, int) error {
		time.Sleep(5 * time.Millisecond) // long enough for the flusher to try
		return nil
	}}
	l := newLib(t, store, asyncfn.Function{Name: "f", Func: f, Checkpoint: asyncfn.CheckpointConfig{Rows: 2}})
	l.startPool(time.Second, nil)
	if status, body := l.do(http.MethodPost, "f", "b1", checkpointBody(n)); status != http.StatusAccepted {
		t.Fatalf("POST = %d %s", status, body)
	}
	if status, body := l.pollFor("f", "b1"); status != http.StatusOK || body != wantResult(t, n) {
		t.Fatalf("GET = %d %s\nwant %s", status, body, wantResult(t, n))
	}
	if store.Calls(storetest.OpCheckpoint) == 0 {
		t.Error("no checkpoint was tried")
	}
}

// TestCheckpointAllRowsSaved: a batch whose rows were all saved answers without calling
// the function.
func TestCheckpointAllRowsSaved(t *testing.T) {
	t.Parallel()
	const n = 6
	f := &perRow{stop: func(int, int) error { return nil }}
	store := memory.New()
	l := newLib(t, store, asyncfn.Function{Name: "f", Func: f})
	l.claimAndAbandon("f", "b1", checkpointBody(n), 50*time.Millisecond)
	rows, _ := asyncfn.ParseRows([]byte(checkpointBody(n)))
	var saved []asyncfn.SavedRow
	for _, r := range rows {
		var v bytes.Buffer
		enc := json.NewEncoder(&v)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(valueOf(r)); err != nil {
			t.Fatal(err)
		}
		saved = append(saved, asyncfn.SavedRow{Number: r.Number, Value: bytes.TrimSuffix(v.Bytes(), []byte("\n"))})
	}
	if err := store.Checkpoint(context.Background(), asyncfn.Key{Function: "f", BatchID: "b1"}, "dead-worker", time.Now(), saved); err != nil {
		t.Fatal(err)
	}
	l.startPool(time.Second, nil)
	if status, body := l.pollFor("f", "b1"); status != http.StatusOK || body != wantResult(t, n) {
		t.Fatalf("GET = %d %s\nwant %s", status, body, wantResult(t, n))
	}
	if calls := f.called(); len(calls) != 0 {
		t.Errorf("the function was called with %v, want no call", calls)
	}
}
