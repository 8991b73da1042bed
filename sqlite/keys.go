package sqlite

import (
	"context"
	"database/sql"
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/asyncfn/asyncfn"
)

// The store holds its file alone (lockFile), so every key in the table went through its
// Create. A filter of those keys answers most Gets of a key never stored (the look-up
// of every POST run at once, ServiceConfig.Exclusive) without a read transaction, whose
// WAL locks and page reads cost about as much as the insert that follows. Open reads the
// keys stored: about a second per million batches kept.

// keyFilter is a Bloom filter of keys: one it was never given is not in the table; one it
// was may be (about 1 absent key in 100 at its capacity), and is looked up. Keys deleted
// from the table stay in it until the next filter replaces it.
type keyFilter struct {
	bits     []atomic.Uint64
	capacity int          // keys it holds at about 1% false positives
	added    atomic.Int64 // keys given, by the scan that built it and by Create since
}

const (
	filterBitsPerKey = 10
	filterHashes     = 7
)

// minFilterKeys is the capacity of the smallest filter: 80 KB.
var minFilterKeys = 1 << 16

var keySeed = maphash.MakeSeed() // the filters live in this process only

func newKeyFilter(capacity int) *keyFilter {
	capacity = max(capacity, minFilterKeys)
	return &keyFilter{bits: make([]atomic.Uint64, (capacity*filterBitsPerKey+63)/64), capacity: capacity}
}

// keyHash hashes a key's function and batch id, given as strings or bytes.
func keyHash[T ~string | ~[]byte](function, batchID T) uint64 {
	var h maphash.Hash
	h.SetSeed(keySeed)
	write(&h, function)
	h.WriteByte(0) // never in a function name
	write(&h, batchID)
	return h.Sum64()
}

// write adds v to h without copying it.
func write[T ~string | ~[]byte](h *maphash.Hash, v T) {
	if s, ok := any(v).(string); ok {
		h.WriteString(s)
	} else {
		h.Write([]byte(v))
	}
}

// positions calls fn with the word and bit of each of the bits of the key hashed to h
// (double hashing).
func (f *keyFilter) positions(h uint64, fn func(word int, bit uint64) bool) {
	step := h>>32 | 1
	m := uint64(len(f.bits)) * 64
	for i := range uint64(filterHashes) {
		p := (h + i*step) % m
		if !fn(int(p/64), 1<<(p%64)) {
			return
		}
	}
}

func (f *keyFilter) add(h uint64) {
	f.positions(h, func(word int, bit uint64) bool {
		f.bits[word].Or(bit)
		return true
	})
	f.added.Add(1)
}

func (f *keyFilter) mayHold(h uint64) bool {
	held := true
	f.positions(h, func(word int, bit uint64) bool {
		held = f.bits[word].Load()&bit != 0
		return held
	})
	return held
}

// keys is the store's filter, and the next one while a scan of the table builds it.
type keys struct {
	cur  atomic.Pointer[keyFilter]
	mu   sync.Mutex
	next *keyFilter // given every key added during its scan; nil when none is built
	full bool       // a next filter is being built
	done bool       // the store is closing: no more builds
	wg   sync.WaitGroup
	stop context.CancelFunc
}

// mayHold reports whether the table may hold key.
func (s *Store) mayHold(key asyncfn.Key) bool {
	return s.keys.cur.Load().mayHold(keyHash(key.Function, key.BatchID))
}

// added records key as in the table before Create's insert runs, within its
// transaction. Past the filter's capacity, a larger one is built in the background.
func (s *Store) added(key asyncfn.Key) {
	h := keyHash(key.Function, key.BatchID)
	k := &s.keys
	k.mu.Lock()
	defer k.mu.Unlock()
	cur := k.cur.Load()
	cur.add(h)
	if k.next != nil {
		k.next.add(h)
	}
	if k.full || k.done || cur.added.Load() <= int64(cur.capacity) {
		return
	}
	k.full = true
	k.wg.Go(s.rebuildKeys)
}

// rebuildKeys replaces the filter with one built from the keys in the table, sized for
// twice as many, so that the keys swept meanwhile leave it.
func (s *Store) rebuildKeys() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	k := &s.keys
	k.mu.Lock()
	k.stop = stop
	k.mu.Unlock()
	f, err := s.scanKeys(ctx, func(f *keyFilter) error {
		k.mu.Lock()
		k.next = f
		k.mu.Unlock()
		// Every Create that added its key before next was set commits (or fails) with
		// the transaction of this empty operation or an earlier one, so the scan that
		// follows sees it; every later one adds its key to next.
		return s.tx(ctx, func(txn) error { return nil })
	})
	k.mu.Lock()
	defer k.mu.Unlock()
	k.next, k.full, k.stop = nil, false, nil
	if err != nil {
		// Tried again when the filter holds twice as many keys: until then, more new
		// keys are looked up in the table.
		cur := k.cur.Load()
		cur.capacity = 2 * int(cur.added.Load())
		if !s.closed.Load() {
			s.log.Warn("sqlite: could not rebuild the filter of stored keys; looking new keys up in the file", "err", err)
		}
		return
	}
	k.cur.Store(f)
}

// scanKeys builds a filter for twice the keys in the table, calls begin (if not nil) with
// it before reading them, and adds them.
func (s *Store) scanKeys(ctx context.Context, begin func(*keyFilter) error) (*keyFilter, error) {
	var n int
	if err := s.read.QueryRowContext(ctx, `SELECT count(*) FROM batches`).Scan(&n); err != nil {
		return nil, s.translate(err)
	}
	f := newKeyFilter(2 * n)
	if begin != nil {
		if err := begin(f); err != nil {
			return nil, err
		}
	}
	rows, err := s.read.QueryContext(ctx, `SELECT function, batch_id FROM batches`)
	if err != nil {
		return nil, s.translate(err)
	}
	defer rows.Close()
	var function, batchID sql.RawBytes // a million keys read in a second, not copied
	for rows.Next() {
		if err := rows.Scan(&function, &batchID); err != nil {
			return nil, s.translate(err)
		}
		f.add(keyHash(function, batchID))
	}
	return f, s.translate(rows.Err())
}

// stopKeys ends a rebuild under way and waits for it, before the store closes.
func (s *Store) stopKeys() {
	s.keys.mu.Lock()
	s.keys.done = true
	if s.keys.stop != nil {
		s.keys.stop()
	}
	s.keys.mu.Unlock()
	s.keys.wg.Wait()
}
