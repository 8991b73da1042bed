// Package wire reads the pieces of Snowflake's wire format that both ends of the
// protocol need: JSON values checked as json.Valid and utf8.Valid would, in one pass that
// also finds where they end (Value, Valid); boundaries of values in JSON text already
// checked (SkipValue, Member, Elements); and HTTP's deflate in its two spellings. The
// service (requests) and the caller (answers) share it.
package wire

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/zlib"
	"encoding/json"
	"io"
)

// SkipSpace returns the offset of the first byte at or after i that is not JSON space.
func SkipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// SkipValue returns the offset just past the JSON value starting at i, in a document
// already known to be valid.
func SkipValue(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
			if depth < 0 { // a scalar ended by its container
				return i
			}
		case ',', ' ', '\t', '\n', '\r', ':':
			if depth == 0 {
				return i
			}
		}
	}
	return i
}

// Member returns the value of key in a top-level object of valid JSON (the last one, as
// encoding/json takes it), or false if doc is not an object or has no such key.
func Member(doc []byte, key string) ([]byte, bool) {
	i := SkipSpace(doc, 0)
	if i >= len(doc) || doc[i] != '{' {
		return nil, false
	}
	var found []byte
	ok := false
	i = SkipSpace(doc, i+1)
	for i < len(doc) && doc[i] == '"' {
		end := SkipValue(doc, i)
		name := doc[i:end]
		i = SkipSpace(doc, SkipSpace(doc, end)+1) // past the colon
		end = SkipValue(doc, i)
		if keyIs(name, key) {
			found, ok = doc[i:end], true
		}
		i = SkipSpace(doc, end)
		if i < len(doc) && doc[i] == ',' {
			i = SkipSpace(doc, i+1)
		}
	}
	return found, ok
}

// keyIs compares a quoted key with a plain one, unescaping only when it must.
func keyIs(quoted []byte, key string) bool {
	if bytes.IndexByte(quoted, '\\') < 0 {
		return string(quoted[1:len(quoted)-1]) == key
	}
	var s string
	return json.Unmarshal(quoted, &s) == nil && s == key
}

// Elements returns the elements of an array of valid JSON, or false if v is not one.
func Elements(v []byte) ([][]byte, bool) {
	i := SkipSpace(v, 0)
	if i >= len(v) || v[i] != '[' {
		return nil, false
	}
	out := [][]byte{}
	i = SkipSpace(v, i+1)
	for i < len(v) && v[i] != ']' {
		end := SkipValue(v, i)
		out = append(out, v[i:end])
		i = SkipSpace(v, end)
		if i < len(v) && v[i] == ',' {
			i = SkipSpace(v, i+1)
		}
	}
	return out, true
}

// NewDeflateReader reads HTTP's "deflate", which is zlib-wrapped by the standard but sent
// raw by some clients and servers: the first two bytes tell which.
func NewDeflateReader(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	head, err := br.Peek(2)
	if err != nil && len(head) < 2 {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if head[0]&0x0f == 8 && (uint16(head[0])<<8|uint16(head[1]))%31 == 0 {
		return zlib.NewReader(br)
	}
	return flate.NewReader(br), nil
}
