package caller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// textRows returns rows r0, r1, ...
func textRows(n int) []string {
	rows := make([]string, n)
	for i := range rows {
		rows[i] = fmt.Sprintf("r%d", i)
	}
	return rows
}

func newRunClient(t *testing.T, handler http.Handler, batchRows, concurrency int) *Client {
	t.Helper()
	server := httptest.NewServer(handler)
	t.Cleanup(server.Close)
	cfg := fastConfig(server.URL + "/echo")
	cfg.MaxBatchRows, cfg.Concurrency = batchRows, concurrency
	client, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// collect runs the client over rows and returns the outcomes' indexes, first rows and
// values (as text), in the order the sink got them.
func collect(t *testing.T, client *Client, in RowReader) (indexes, firstRows []int, values []string, err error) {
	t.Helper()
	_, err = client.Run(context.Background(), in, func(o Outcome) error {
		indexes = append(indexes, o.Index)
		firstRows = append(firstRows, o.FirstRow)
		for _, v := range o.Answer.Values {
			var s string
			json.Unmarshal(v, &s)
			values = append(values, s)
		}
		return nil
	})
	return indexes, firstRows, values, err
}

// TestRunOrderWithOutOfOrderCompletion makes the first batch finish last and checks
// that the outcomes still come in input order.
func TestRunOrderWithOutOfOrderCompletion(t *testing.T) {
	t.Parallel()
	const batches = 4
	othersDone := make(chan struct{}, batches-1)
	baseline := BaselineHandler()
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		first := strings.Contains(string(body), `"r0"`)
		if first {
			for range batches - 1 {
				select {
				case <-othersDone:
				case <-r.Context().Done():
					return
				}
			}
		}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		baseline.ServeHTTP(w, r)
		if !first {
			othersDone <- struct{}{}
		}
	})
	client := newRunClient(t, handler, 2, batches)
	indexes, firstRows, values, err := collect(t, client, ArgsReader(textRows(2*batches), ArgType{}))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(indexes) != "[0 1 2 3]" || fmt.Sprint(firstRows) != "[0 2 4 6]" {
		t.Errorf("batches %v starting at rows %v, want in order", indexes, firstRows)
	}
	if strings.Join(values, ",") != strings.Join(textRows(2*batches), ",") {
		t.Errorf("values %v", values)
	}
}

// countingReader counts the rows read, to check how far the input is read ahead.
type countingRowReader struct {
	RowReader
	read atomic.Int64
}

func (c *countingRowReader) Read() (Row, error) {
	row, err := c.RowReader.Read()
	if err == nil {
		c.read.Add(1)
	}
	return row, err
}

// TestRunBoundsMemory checks that no more than Concurrency batches are in flight at the
// service, and that while the sink holds batch k the input has been read no further than
// the batch being read after the Concurrency batches from k on.
func TestRunBoundsMemory(t *testing.T) {
	t.Parallel()
	const batchRows, concurrency, batches = 3, 3, 20
	var inFlight, maxInFlight atomic.Int64
	baseline := BaselineHandler()
	client := newRunClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		for {
			m := maxInFlight.Load()
			if n <= m || maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		defer inFlight.Add(-1)
		baseline.ServeHTTP(w, r)
	}), batchRows, concurrency)
	in := &countingRowReader{RowReader: ArgsReader(textRows(batchRows*batches), ArgType{})}
	next := 0
	summary, err := client.Run(context.Background(), in, func(o Outcome) error {
		if o.Index != next {
			t.Errorf("batch %d came when %d was due", o.Index, next)
		}
		next++
		if read, limit := in.read.Load(), int64((o.Index+concurrency+1)*batchRows); read > limit {
			t.Errorf("while batch %d was written, %d rows were read; at most %d may be", o.Index, read, limit)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if m := maxInFlight.Load(); m > concurrency {
		t.Errorf("%d batches were in flight at once, more than %d", m, concurrency)
	}
	if summary.Batches != batches || summary.Rows != batchRows*batches || summary.Errors != 0 || summary.POST.Count != batches {
		t.Errorf("summary %+v", summary)
	}
}

// TestRunStopsAtFailedBatch checks that a failed batch ends the run with an error that
// names it and its rows, after the batches before it were written.
func TestRunStopsAtFailedBatch(t *testing.T) {
	t.Parallel()
	baseline := BaselineHandler()
	var mu sync.Mutex
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(string(body), `"r5"`) {
			http.Error(w, "row 1: r5 is not allowed.", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		baseline.ServeHTTP(w, r)
	})
	for _, concurrency := range []int{1, 4} {
		t.Run(fmt.Sprint("concurrency ", concurrency), func(t *testing.T) {
			t.Parallel()
			client := newRunClient(t, handler, 2, concurrency)
			var indexes []int
			var values []string
			summary, err := client.Run(context.Background(), ArgsReader(textRows(20), ArgType{}), func(o Outcome) error {
				indexes = append(indexes, o.Index)
				for _, v := range o.Answer.Values {
					var s string
					json.Unmarshal(v, &s)
					values = append(values, s)
				}
				return nil
			})
			if summary.Errors != 1 {
				t.Errorf("summary counts %d failed batches, want 1", summary.Errors)
			}
			var be *BatchError
			if !errors.As(err, &be) || !errors.Is(err, ErrRemoteStatus) {
				t.Fatalf("error %v, want a remote status BatchError", err)
			}
			want := "rows 5 to 6: batch " + be.BatchID + ": Request failed for external function EXT_FUNC with remote service error: 400 'row 1: r5 is not allowed.'"
			if err.Error() != want || !strings.HasPrefix(be.BatchID, client.Config().QueryID+":") {
				t.Errorf("error\n%s\nwant\n%s", err, want)
			}
			if concurrency == 1 && (fmt.Sprint(indexes) != "[0 1]" || strings.Join(values, ",") != "r0,r1,r2,r3") {
				t.Errorf("written batches %v values %v, want the two before the failure", indexes, values)
			}
		})
	}
}

type failingReader struct {
	rows int
	err  error
}

func (f *failingReader) Columns() []string { return []string{"$1"} }

func (f *failingReader) Read() (Row, error) {
	if f.rows == 0 {
		return nil, f.err
	}
	f.rows--
	return Row{TextValue("x")}, nil
}

// TestRunReadError checks that the rows read before an input error are answered, then
// the error is returned with its row.
func TestRunReadError(t *testing.T) {
	t.Parallel()
	client := newRunClient(t, BaselineHandler(), 2, 2)
	broken := errors.New("line 4: bad quote")
	_, _, values, err := collect(t, client, &failingReader{rows: 3, err: broken})
	if !errors.Is(err, broken) || err.Error() != "reading row 4: line 4: bad quote" {
		t.Errorf("error %v", err)
	}
	if len(values) != 3 {
		t.Errorf("%d rows written, want 3", len(values))
	}
}

// TestRunSinkError checks that an error from the sink (say, a closed pipe) ends the run.
func TestRunSinkError(t *testing.T) {
	t.Parallel()
	client := newRunClient(t, BaselineHandler(), 1, 2)
	closed := errors.New("broken pipe")
	_, err := client.Run(context.Background(), ArgsReader(textRows(10), ArgType{}), func(Outcome) error { return closed })
	if !errors.Is(err, closed) {
		t.Errorf("error %v, want %v", err, closed)
	}
}

func TestRunEmptyInput(t *testing.T) {
	t.Parallel()
	client := newRunClient(t, BaselineHandler(), 2, 2)
	summary, err := client.Run(context.Background(), ArgsReader(nil, ArgType{}), func(Outcome) error {
		t.Error("sink called")
		return nil
	})
	if err != nil || summary.Batches != 0 {
		t.Errorf("summary %+v, error %v", summary, err)
	}
}
