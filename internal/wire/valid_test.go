package wire_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/asyncfn/asyncfn/internal/wire"
)

// checkValue fails unless wire.Valid and wire.Value judge b as json.Valid and utf8.Valid do.
func checkValue(t *testing.T, b []byte) {
	t.Helper()
	want := json.Valid(b)
	if got := wire.Valid(b); got != want {
		t.Fatalf("Valid(%q) = %v, json.Valid says %v", b, got, want)
	}
	if !want {
		return
	}
	end, bad := wire.Value(b, wire.SkipSpace(b, 0), 0)
	if wantEnd := len(bytes.TrimRight(b, " \t\n\r")); end != wantEnd {
		t.Fatalf("Value(%q) ends at %d, want %d", b, end, wantEnd)
	}
	if bad != !utf8.Valid(b) {
		t.Fatalf("Value(%q) badUTF8 = %v, utf8.Valid says %v", b, bad, utf8.Valid(b))
	}
}

var validSeeds = []string{
	`{"data":[[0,"a",1,null],[1,{"x":[1,2]},true,false]]}`, `[]`, `{}`, ` [ ] `, `""`,
	`"a\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00"`, `"\u00G0"`, `"\x"`, "\"\x1f\"", "\"\x7f\"",
	`-0`, `-`, `01`, `1.`, `1.5e`, `1E+9`, `1e-09`, `-0.0e0`, `.5`, `+1`, `1,`, `tru`, `nulls`,
	`[1,]`, `[,1]`, `{"a":1,}`, `{"a" 1}`, `{"a":1 "b":2}`, `{1:2}`, `[1 2]`, `"abc`,
	"\"h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 ok\"", "\"\xff\"", "\"\xc3\"", "\"\xed\xa0\x80\"",
	"\"\xef\xbf\xbd\"", "[\"\xf4\x90\x80\x80\", 1]", "{\"k\xfe\":\"v\"}", "\xff", "\"0123456789abcdef\xe9\"",
	"\"0123456\\\"789abcdef\"", "\"01234567\x00\"", " \t\n\r1 \t\n\r", "\v1", "1\f",
}

func TestValid(t *testing.T) {
	t.Parallel()
	for _, s := range validSeeds {
		checkValue(t, []byte(s))
		// Every prefix: strings and numbers cut in the middle, and the eight-byte reads
		// running into the end.
		for n := range len(s) {
			checkValue(t, []byte(s[:n]))
		}
	}
}

// TestValidDepth: encoding/json refuses arrays and objects nested more than 10000 deep,
// counting those around the value that Value is given.
func TestValidDepth(t *testing.T) {
	t.Parallel()
	for _, open := range []string{"[", `{"k":`} {
		shut := map[string]string{"[": "]", `{"k":`: "}"}[open]
		for _, n := range []int{9999, 10000, 10001} {
			b := []byte(strings.Repeat(open, n) + "1" + strings.Repeat(shut, n))
			checkValue(t, b)
			if got, want := wire.Valid(b), n <= 10000; got != want {
				t.Errorf("Valid of %d nested %s = %v, want %v", n, open, got, want)
			}
			if end, _ := wire.Value(b, 0, 10000-n); n <= 10000 && end != len(b) {
				t.Errorf("Value of %d nested %s inside %d = %d, want %d", n, open, 10000-n, end, len(b))
			}
			if end, _ := wire.Value(b, 0, 10000-n+1); end != -1 {
				t.Errorf("Value of %d nested %s inside %d = %d, want -1", n, open, 10000-n+1, end)
			}
		}
	}
}

// FuzzValid checks the scanner against encoding/json and unicode/utf8 on any bytes.
func FuzzValid(f *testing.F) {
	for _, s := range validSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(checkValue)
}
