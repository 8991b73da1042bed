package dynamodb

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/asyncfn/asyncfn"
)

// Rows saved by Checkpoint are kept as segments, one per checkpoint: its rows encoded
// (encodeRows) as chunk items like a large payload's, always chunked so that checkpoints
// never grow the meta item, which names each segment in its saved list ("<id>/<chunks>").
// A segment becomes visible only when the conditional update of the meta item names it.

// segment is one checkpoint's chunks.
type segment struct {
	keys []item
}

// segments are the segments that the meta item it names, oldest first.
func segments(it item) []segment {
	list, _ := it[aSaved].(*types.AttributeValueMemberL)
	if list == nil {
		return nil
	}
	var segs []segment
	for _, v := range list.Value {
		ref, _ := v.(*types.AttributeValueMemberS)
		if ref == nil {
			continue
		}
		id, count, _ := strings.Cut(ref.Value, "/")
		n, _ := strconv.Atoi(count)
		segs = append(segs, segment{keys: segmentKeys(it[aPK], aSaved, id, n)})
	}
	return segs
}

// encodeRows is rows as a segment's bytes: for each row its number (a varint), the length
// of its value (a uvarint) and the value.
func encodeRows(rows []asyncfn.SavedRow) []byte {
	var buf []byte
	for _, r := range rows {
		buf = binary.AppendVarint(buf, int64(r.Number))
		buf = binary.AppendUvarint(buf, uint64(len(r.Value)))
		buf = append(buf, r.Value...)
	}
	return buf
}

func decodeRows(data []byte) ([]asyncfn.SavedRow, error) {
	var rows []asyncfn.SavedRow
	for len(data) > 0 {
		number, n := binary.Varint(data)
		if n <= 0 {
			return nil, errors.New("dynamodb: a segment of saved rows is damaged")
		}
		size, m := binary.Uvarint(data[n:])
		if m <= 0 || uint64(len(data)-n-m) < size {
			return nil, errors.New("dynamodb: a segment of saved rows is damaged")
		}
		data = data[n+m:]
		rows = append(rows, asyncfn.SavedRow{Number: int(number), Value: data[:size:size]})
		data = data[size:]
	}
	return rows, nil
}

// saved reads the rows of the segments that the meta item it names, the first value of a
// row winning.
func (s *Store) saved(ctx context.Context, it item) ([]asyncfn.SavedRow, error) {
	var saved []asyncfn.SavedRow
	for _, seg := range segments(it) {
		data, err := s.readChunks(ctx, seg.keys, aSaved)
		if err != nil {
			return nil, err
		}
		rows, err := decodeRows(data)
		if err != nil {
			return nil, err
		}
		saved = asyncfn.AddSaved(saved, rows)
	}
	return saved, nil
}

// Checkpoint reads the batch first, to write nothing for a lease already lost or a limit
// already reached and for its expiry (the chunks' ttl), then writes the segment, then
// names it in the meta item on condition of the lease and the limit.
func (s *Store) Checkpoint(ctx context.Context, key asyncfn.Key, owner string, now time.Time, rows []asyncfn.SavedRow) error {
	if s.closed.Load() {
		return asyncfn.ErrClosed
	}
	n := int64(asyncfn.SavedBytes(rows))
	ttl, err := s.checkpointable(ctx, key, owner, now, n)
	if err != nil || len(rows) == 0 {
		return err
	}
	pk := pkOf(key)
	id, chunks, err := s.putChunks(ctx, pk, aSaved, encodeRows(rows), ttl)
	if err != nil {
		return err
	}
	ref := fmt.Sprintf("%s/%d", id, chunks)
	cond := condHeld + " AND #expires_at > :now AND (attribute_not_exists(#saved_bytes) OR #saved_bytes <= :limit)"
	u := &update{values: item{":running": stateValue(asyncfn.Running), ":owner": str(owner), ":now": nanos(now),
		":limit": num(asyncfn.MaxSavedBytes - n), ":none": &types.AttributeValueMemberL{Value: []types.AttributeValue{}},
		":ref": &types.AttributeValueMemberL{Value: []types.AttributeValue{str(ref)}}, ":zero": num(0), ":n": num(n)}}
	u.set = append(u.set, "#saved = list_append(if_not_exists(#saved, :none), :ref)",
		"#saved_bytes = if_not_exists(#saved_bytes, :zero) + :n")
	err = s.updateMeta(ctx, key, u, cond, errConditionFailed)
	if !errors.Is(err, errConditionFailed) {
		return err
	}
	// The lease was lost, or the limit reached, meanwhile: these chunks are never named.
	_ = s.deleteChunks(ctx, item{aPK: str(pk), aSaved: u.values[":ref"]}) // best effort: TTL removes them too
	if _, err := s.checkpointable(ctx, key, owner, now, n); err != nil {
		return err
	}
	return asyncfn.ErrLeaseLost
}

// checkpointable returns the ttl of the batch at key if owner holds its lease at now and n
// more bytes keep it within asyncfn.MaxSavedBytes; else ErrLeaseLost or
// ErrCheckpointTooLarge.
func (s *Store) checkpointable(ctx context.Context, key asyncfn.Key, owner string, now time.Time, n int64) (int64, error) {
	cur, err := s.readMeta(ctx, key, "#state, #owner, #expires_at, #saved_bytes")
	switch {
	case err != nil:
		return 0, err
	case getS(cur, aState) != string(asyncfn.Running) || getS(cur, aOwner) != owner || !getT(cur, aExpiresAt).After(now):
		return 0, asyncfn.ErrLeaseLost
	case getN(cur, aSavedBytes)+n > asyncfn.MaxSavedBytes:
		return 0, asyncfn.ErrCheckpointTooLarge
	}
	return ttlOf(getT(cur, aExpiresAt)), nil
}
