package wire

import (
	"encoding/binary"
	"math/bits"
	"unicode/utf8"
)

// maxDepth is how deeply encoding/json lets arrays and objects nest: one more is invalid.
const maxDepth = 10000

// Valid reports whether b is one JSON value, as json.Valid does. Bytes that are not UTF-8
// inside strings do not make it invalid (Value tells of them).
func Valid(b []byte) bool {
	end, _ := Value(b, SkipSpace(b, 0), 0)
	return end >= 0 && SkipSpace(b, end) == len(b)
}

// Value reads the JSON value that starts at b[i] (not at space before it) and returns the
// offset just past it, or -1 if b[i:] does not start with a value that json.Valid would
// accept in its place. depth is the number of arrays and objects around the value, which
// count toward encoding/json's limit on nesting. badUTF8 reports whether a string in the
// value holds bytes that are not valid UTF-8: JSON allows them and encoding/json reads
// them as U+FFFD, so it is for the caller to refuse them. Value reads b once, several
// times faster than json.Valid then utf8.Valid.
func Value(b []byte, i, depth int) (end int, badUTF8 bool) {
	if i >= len(b) {
		return -1, false
	}
	switch c := b[i]; c {
	case '"':
		return str(b, i+1)
	case '[':
		return array(b, i+1, depth+1)
	case '{':
		return object(b, i+1, depth+1)
	case 't':
		return literal(b, i, "true"), false
	case 'f':
		return literal(b, i, "false"), false
	case 'n':
		return literal(b, i, "null"), false
	default:
		return number(b, i), false
	}
}

// array reads the rest of an array whose '[' is just before b[i].
func array(b []byte, i, depth int) (int, bool) {
	if depth > maxDepth {
		return -1, false
	}
	i = SkipSpace(b, i)
	if i < len(b) && b[i] == ']' {
		return i + 1, false
	}
	bad := false
	for {
		end, badValue := Value(b, i, depth)
		if end < 0 {
			return -1, false
		}
		bad = bad || badValue
		if i = SkipSpace(b, end); i >= len(b) {
			return -1, false
		}
		switch b[i] {
		case ',':
			i = SkipSpace(b, i+1)
		case ']':
			return i + 1, bad
		default:
			return -1, false
		}
	}
}

// object reads the rest of an object whose '{' is just before b[i].
func object(b []byte, i, depth int) (int, bool) {
	if depth > maxDepth {
		return -1, false
	}
	i = SkipSpace(b, i)
	if i < len(b) && b[i] == '}' {
		return i + 1, false
	}
	bad := false
	for {
		if i >= len(b) || b[i] != '"' {
			return -1, false
		}
		end, badKey := str(b, i+1)
		if end < 0 {
			return -1, false
		}
		if i = SkipSpace(b, end); i >= len(b) || b[i] != ':' {
			return -1, false
		}
		end, badValue := Value(b, SkipSpace(b, i+1), depth)
		if end < 0 {
			return -1, false
		}
		bad = bad || badKey || badValue
		if i = SkipSpace(b, end); i >= len(b) {
			return -1, false
		}
		switch b[i] {
		case ',':
			i = SkipSpace(b, i+1)
		case '}':
			return i + 1, bad
		default:
			return -1, false
		}
	}
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// str reads the rest of a string whose '"' is just before b[i].
func str(b []byte, i int) (int, bool) {
	bad := false
	for {
		// Most text is plain ASCII: test eight bytes at once for a quote, a backslash, a
		// control character or a byte of a multi-byte character. Each test flags no
		// byte before the first that matches, so the lowest flag marks that byte.
		for ; i+8 <= len(b); i += 8 {
			x := binary.LittleEndian.Uint64(b[i:])
			q, s := x^(ones*'"'), x^(ones*'\\')
			if m := ((q-ones)&^q | (s-ones)&^s | (x-ones*0x20)&^x | x) & highs; m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
		}
		if i >= len(b) {
			return -1, false
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, bad
		case c == '\\':
			if i+1 >= len(b) {
				return -1, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return -1, false
				}
				i += 6
			default:
				return -1, false
			}
		case c < 0x20:
			return -1, false
		case c < utf8.RuneSelf:
			i++ // the tail, under eight bytes
		default:
			r, size := utf8.DecodeRune(b[i:])
			bad = bad || r == utf8.RuneError && size == 1
			i += size
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// number reads a number starting at b[i]: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func number(b []byte, i int) int {
	if b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return -1
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		i = digits(b, i+1)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		if i = digits(b, i+1); b[i-1] == '.' {
			return -1
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		start := i
		if i = digits(b, i); i == start {
			return -1
		}
	}
	return i
}

// digits returns the offset of the first byte at or after i that is not a digit.
func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// literal returns the offset past word if b[i:] starts with it, else -1.
func literal(b []byte, i int, word string) int {
	if len(b)-i < len(word) || string(b[i:i+len(word)]) != word {
		return -1
	}
	return i + len(word)
}
