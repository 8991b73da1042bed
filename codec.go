package asyncfn

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/asyncfn/asyncfn/internal/wire"
)

// MaxResultBytes is Snowflake's limit on the size of one batch's response.
const MaxResultBytes = 10 << 20

// ParseRows decodes a Snowflake request body, {"data": [[0, arg...], [1, arg...], ...]},
// into rows. Row numbers must be 0, 1, 2, ... in order, as Snowflake sends them. The error
// is an InvalidInput *Error whose message is one sentence for the SQL user.
//
// It reads as encoding/json would decode the body into struct{ Data *[][]json.RawMessage }
// (the key matched case-insensitively, the last of duplicate keys winning), but in two
// passes instead of four: the body is validated once, then split without copying, the
// arguments of all rows sharing one backing array. This is the hot path of every POST and
// of every batch a worker runs.
func ParseRows(body []byte) ([]Row, error) {
	if !json.Valid(body) {
		var v any
		err := json.Unmarshal(body, &v)
		if err == nil { // not reached: Valid and Unmarshal agree
			err = errors.New("invalid JSON")
		}
		return nil, InvalidInputf("the request body is not valid JSON: %s.", trimJSONError(err))
	}
	i := wire.SkipSpace(body, 0)
	switch body[i] {
	case 'n':
		return nil, errNoData
	case '{':
	default:
		return nil, InvalidInputf("the request body is not a JSON object of the form {\"data\": [[0, ...], ...]}.")
	}
	data := -1 // offset of the last "data" value
	for i = wire.SkipSpace(body, i+1); body[i] != '}'; {
		keyEnd := wire.SkipValue(body, i)
		key := body[i+1 : keyEnd-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			var k string
			_ = json.Unmarshal(body[i:keyEnd], &k) // valid: checked above
			key = []byte(k)
		}
		i = wire.SkipSpace(body, wire.SkipSpace(body, keyEnd)+1) // past the colon
		if bytes.EqualFold(key, []byte("data")) {
			data = i
		}
		i = wire.SkipSpace(body, wire.SkipValue(body, i))
		if body[i] == ',' {
			i = wire.SkipSpace(body, i+1)
		}
	}
	switch {
	case data < 0 || body[data] == 'n':
		return nil, errNoData
	case body[data] != '[':
		return nil, InvalidInputf("the request body's \"data\" is not an array of rows.")
	}
	var rows []Row
	var args []json.RawMessage
	var bounds []int // end of each row's arguments in args
	for i = wire.SkipSpace(body, data+1); body[i] != ']'; {
		n := len(rows)
		if body[i] != '[' || body[wire.SkipSpace(body, i+1)] == ']' {
			return nil, InvalidInputf("row %d of the request is not an array starting with its row number.", n)
		}
		i = wire.SkipSpace(body, i+1)
		end := wire.SkipValue(body, i)
		number, ok := atoi(body[i:end])
		if !ok {
			return nil, InvalidInputf("row %d of the request does not start with its row number; rows must be numbered 0, 1, 2, ... in order.", n)
		}
		if number != n {
			return nil, InvalidInputf("row %d of the request is numbered %d; rows must be numbered 0, 1, 2, ... in order.", n, number)
		}
		for i = wire.SkipSpace(body, end); body[i] == ','; {
			start := wire.SkipSpace(body, i+1)
			i = wire.SkipValue(body, start)
			args = append(args, body[start:i])
			i = wire.SkipSpace(body, i)
		}
		rows = append(rows, Row{Number: number})
		bounds = append(bounds, len(args))
		i = wire.SkipSpace(body, i+1) // past the row's ']'
		if body[i] == ',' {
			i = wire.SkipSpace(body, i+1)
		}
	}
	start := 0
	for r := range rows {
		rows[r].Args = args[start:bounds[r]:bounds[r]]
		start = bounds[r]
	}
	if rows == nil {
		rows = []Row{}
	}
	// encoding/json accepts invalid UTF-8 in strings (it decodes it as U+FFFD), and a
	// function given the raw bytes would echo them into an answer that is not JSON.
	// Snowflake sends only valid UTF-8: a body that is not was made by something else.
	if !utf8.Valid(body) {
		for _, r := range rows {
			for _, a := range r.Args {
				if !utf8.Valid(a) {
					return nil, InvalidInputf("row %d of the request holds text that is not valid UTF-8; send text encoded as UTF-8, as Snowflake does.", r.Number)
				}
			}
		}
		return nil, InvalidInputf("the request body holds text that is not valid UTF-8; send text encoded as UTF-8, as Snowflake does.")
	}
	return rows, nil
}

var errNoData = InvalidInputf("the request body has no \"data\" array of rows.")

// isArgOf reports whether v is one of r's arguments itself, not a copy.
func isArgOf(v json.RawMessage, r Row) bool {
	for _, a := range r.Args {
		if len(v) > 0 && len(v) == len(a) && &v[0] == &a[0] {
			return true
		}
	}
	return false
}

// atoi parses a JSON number token as strconv.Atoi would, without allocating.
func atoi(tok []byte) (int, bool) {
	if len(tok) == 0 || len(tok) > 18 {
		return 0, false
	}
	neg := tok[0] == '-'
	if neg {
		tok = tok[1:]
		if len(tok) == 0 {
			return 0, false
		}
	}
	n := 0
	for _, c := range tok {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// EncodeResult encodes a function's output as the response body Snowflake expects,
// {"data": [[0, v0], [1, v1], ...]}. It fails if the number of values does not match the
// number of rows, if a value cannot be encoded, or if the body exceeds MaxResultBytes.
func EncodeResult(rows []Row, values []any) ([]byte, error) {
	if len(values) != len(rows) {
		return nil, fmt.Errorf("the function returned %d values for %d rows", len(values), len(rows))
	}
	var buf bytes.Buffer
	buf.Grow(64 + 32*len(rows))
	enc := newValueEncoder(&buf)
	buf.WriteString(`{"data":[`)
	var num []byte
	for i, v := range values {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteByte('[')
		num = strconv.AppendInt(num[:0], int64(rows[i].Number), 10)
		buf.Write(num)
		buf.WriteByte(',')
		if err := appendValue(&buf, enc, rows[i], v); err != nil {
			return nil, err
		}
		buf.WriteByte(']')
		if buf.Len()+len("]}") > MaxResultBytes {
			return nil, fmt.Errorf("the result is over Snowflake's %d MB limit for one batch; lower the function's MAX_BATCH_ROWS", MaxResultBytes>>20)
		}
	}
	buf.WriteString("]}")
	// Raw JSON from a function (alone, nested, or from a MarshalJSON) may hold bytes that
	// are not UTF-8; JSON's structure is ASCII, so they stand in strings, where U+FFFD
	// replaces them as encoding/json does in Go strings.
	if out := buf.Bytes(); !utf8.Valid(out) {
		return bytes.ToValidUTF8(out, []byte("\uFFFD")), nil
	}
	return buf.Bytes(), nil
}

// newValueEncoder returns the encoder of appendValue, writing to buf.
func newValueEncoder(buf *bytes.Buffer) *json.Encoder {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	return enc
}

// appendValue writes v, the value of row r, to buf as a result holds it: the one encoding
// of both results and checkpoints, so that a result merged from saved rows is the one a
// single run makes. enc writes to buf (newValueEncoder).
func appendValue(buf *bytes.Buffer, enc *json.Encoder, r Row, v any) error {
	switch v := v.(type) {
	case nil:
		buf.WriteString("null")
	case json.RawMessage:
		// One of the row's own arguments (an echo) was validated with the request.
		if !isArgOf(v, r) && !json.Valid(v) {
			return fmt.Errorf("the function returned invalid JSON for row %d", r.Number)
		}
		buf.Write(v)
	default:
		if err := enc.Encode(v); err != nil {
			return fmt.Errorf("the function's value for row %d cannot be encoded as JSON: %v", r.Number, err)
		}
		buf.Truncate(buf.Len() - 1) // Encode's newline
	}
	return nil
}

// trimJSONError drops the package prefix from encoding/json's messages.
func trimJSONError(err error) string {
	return string(bytes.TrimPrefix([]byte(err.Error()), []byte("json: ")))
}
