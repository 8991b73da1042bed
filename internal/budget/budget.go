// Package budget caps the bytes that goroutines hold at once: request bodies being read,
// batches waiting to be stored.
package budget

import "sync"

// Budget holds up to a number of bytes. Its methods are safe for concurrent use.
type Budget struct {
	mu   sync.Mutex
	max  int64
	used int64
	room chan struct{} // made by a Take that waits, closed when bytes are given back
}

// New returns a budget of max bytes.
func New(max int64) *Budget {
	return &Budget{max: max}
}

// TryTake takes n bytes if they fit now, and reports whether they did.
func (b *Budget) TryTake(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return false
	}
	b.used += n
	return true
}

// Take takes n bytes, waiting until they fit; more than the whole budget takes all of it,
// once it is free, so that one large holder waits for the others rather than forever.
func (b *Budget) Take(n int64) {
	n = min(n, b.max)
	for {
		b.mu.Lock()
		if b.used+n <= b.max {
			b.used += n
			b.mu.Unlock()
			return
		}
		if b.room == nil {
			b.room = make(chan struct{})
		}
		room := b.room
		b.mu.Unlock()
		<-room
	}
}

// Give gives back n bytes taken (by Take: the n it was given).
func (b *Budget) Give(n int64) {
	n = min(n, b.max)
	b.mu.Lock()
	b.used -= n
	if b.room != nil { // someone waits
		close(b.room)
		b.room = nil
	}
	b.mu.Unlock()
}
