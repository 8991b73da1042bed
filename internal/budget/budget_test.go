package budget

import (
	"testing"
	"time"
)

// TestTryTake: bytes that fit are taken, others refused, and room comes back with Give.
func TestTryTake(t *testing.T) {
	t.Parallel()
	b := New(10)
	if !b.TryTake(6) || b.TryTake(5) || !b.TryTake(4) {
		t.Fatal("6 then 4 of 10 must fit, 5 after 6 must not")
	}
	b.Give(6)
	if !b.TryTake(6) {
		t.Error("6 given back did not fit again")
	}
}

// TestTakeWaits: Take waits until the bytes fit, and one larger than the budget waits for
// all of it.
func TestTakeWaits(t *testing.T) {
	t.Parallel()
	b := New(10)
	b.Take(8)
	for _, n := range []int64{5, 100} {
		took := make(chan struct{})
		go func() { b.Take(n); close(took) }()
		select {
		case <-took:
			t.Fatalf("Take(%d) with 2 of 10 free returned", n)
		case <-time.After(50 * time.Millisecond):
		}
		b.Give(8)
		select {
		case <-took:
		case <-time.After(10 * time.Second):
			t.Fatalf("Take(%d) still waits after the bytes came back", n)
		}
		b.Give(n)
		b.Take(8)
	}
}
