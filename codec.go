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
// (the key matched case-insensitively, the last of duplicate keys winning, whatever the
// others hold) and refuses text that is not valid UTF-8, but in one pass: the body is
// checked, as JSON and as UTF-8, and split at once, without copying, the arguments of all
// rows sharing one backing array. Of a body's faults, invalid JSON is told first, then
// its shape, then invalid UTF-8. This is the hot path of every POST and of every batch a
// worker runs.
func ParseRows(body []byte) ([]Row, error) {
	i := wire.SkipSpace(body, 0)
	if i == len(body) || body[i] != '{' {
		switch {
		case !wire.Valid(body):
			return nil, notJSON(body)
		case body[i] == 'n':
			return nil, errNoData
		}
		return nil, InvalidInputf("the request body is not a JSON object of the form {\"data\": [[0, ...], ...]}.")
	}
	var p rowParser
	err := errNoData // about the last "data" value, told once the whole body is valid JSON
	badUTF8 := false // anywhere in the body
	i = wire.SkipSpace(body, i+1)
	for member := i < len(body) && body[i] != '}'; member; {
		if i == len(body) || body[i] != '"' {
			return nil, notJSON(body)
		}
		keyEnd, badKey := wire.Value(body, i, 1)
		if keyEnd < 0 {
			return nil, notJSON(body)
		}
		key := body[i+1 : keyEnd-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			var k string
			_ = json.Unmarshal(body[i:keyEnd], &k) // valid: checked by Value
			key = []byte(k)
		}
		if i = wire.SkipSpace(body, keyEnd); i == len(body) || body[i] != ':' {
			return nil, notJSON(body)
		}
		i = wire.SkipSpace(body, i+1)
		var end int
		var badValue bool
		if bytes.EqualFold(key, []byte("data")) {
			end, badValue, err = p.parse(body, i)
		} else {
			end, badValue = wire.Value(body, i, 1)
		}
		if end < 0 {
			return nil, notJSON(body)
		}
		badUTF8 = badUTF8 || badKey || badValue
		if i = wire.SkipSpace(body, end); i < len(body) && body[i] == ',' {
			i = wire.SkipSpace(body, i+1)
		} else {
			member = false
		}
	}
	switch {
	case i == len(body) || body[i] != '}' || wire.SkipSpace(body, i+1) != len(body):
		return nil, notJSON(body)
	case err != nil:
		return nil, err
	// encoding/json accepts invalid UTF-8 in strings (it decodes it as U+FFFD), and a
	// function given the raw bytes would echo them into an answer that is not JSON.
	// Snowflake sends only valid UTF-8: a body that is not was made by something else.
	case p.badRow >= 0:
		return nil, InvalidInputf("row %d of the request holds text that is not valid UTF-8; send text encoded as UTF-8, as Snowflake does.", p.badRow)
	case badUTF8:
		return nil, InvalidInputf("the request body holds text that is not valid UTF-8; send text encoded as UTF-8, as Snowflake does.")
	}
	return p.result(), nil
}

// rowParser splits the value of a "data" key into rows.
type rowParser struct {
	rows   []Row
	args   []json.RawMessage
	bounds []int // end of each row's arguments in args
	badRow int   // the first row whose arguments hold text that is not UTF-8, or -1
}

// parse reads the "data" value at body[i], replacing the rows of any before it. It
// returns the offset past the value, or -1 if it is not valid JSON; whether its strings
// hold bytes that are not UTF-8; and why its rows are not ones ParseRows returns, if so.
func (p *rowParser) parse(body []byte, i int) (end int, badUTF8 bool, err error) {
	p.rows, p.args, p.bounds, p.badRow = p.rows[:0], p.args[:0], p.bounds[:0], -1
	if end, err = p.split(body, i); err != nil {
		// split stopped at the fault: the rest must still be valid JSON.
		end, badUTF8 = wire.Value(body, i, 1)
		return end, badUTF8, err
	}
	return end, p.badRow >= 0, nil
}

// split reads the rows of the "data" value at body[i] and returns the offset past it. It
// returns -1 and a nil error if the value is not valid JSON, or -1 and the error of the
// first row that is not as Snowflake sends it (if the value is valid JSON).
func (p *rowParser) split(body []byte, i int) (int, error) {
	switch {
	case i < len(body) && body[i] == 'n':
		return -1, errNoData
	case i == len(body) || body[i] != '[':
		return -1, InvalidInputf("the request body's \"data\" is not an array of rows.")
	}
	if i = wire.SkipSpace(body, i+1); i < len(body) && body[i] == ']' {
		return i + 1, nil
	}
	for {
		n := len(p.rows)
		if i == len(body) || body[i] != '[' {
			return -1, InvalidInputf("row %d of the request is not an array starting with its row number.", n)
		}
		if i = wire.SkipSpace(body, i+1); i < len(body) && body[i] == ']' {
			return -1, InvalidInputf("row %d of the request is not an array starting with its row number.", n)
		}
		// data, the array of rows and a row are the three arrays and objects around.
		end, _ := wire.Value(body, i, 3)
		if end < 0 {
			return -1, nil
		}
		number, ok := atoi(body[i:end])
		if !ok {
			return -1, InvalidInputf("row %d of the request does not start with its row number; rows must be numbered 0, 1, 2, ... in order.", n)
		}
		if number != n {
			return -1, InvalidInputf("row %d of the request is numbered %d; rows must be numbered 0, 1, 2, ... in order.", n, number)
		}
		for i = wire.SkipSpace(body, end); i < len(body) && body[i] == ','; {
			start := wire.SkipSpace(body, i+1)
			end, bad := wire.Value(body, start, 3)
			if end < 0 {
				return -1, nil
			}
			if bad && p.badRow < 0 {
				p.badRow = n
			}
			p.args = append(p.args, body[start:end])
			i = wire.SkipSpace(body, end)
		}
		if i == len(body) || body[i] != ']' {
			return -1, nil
		}
		p.rows = append(p.rows, Row{Number: number})
		p.bounds = append(p.bounds, len(p.args))
		if i = wire.SkipSpace(body, i+1); i < len(body) && body[i] == ',' {
			i = wire.SkipSpace(body, i+1)
			continue
		}
		if i == len(body) || body[i] != ']' {
			return -1, nil
		}
		return i + 1, nil
	}
}

// result returns the rows read, each with its slice of the arguments.
func (p *rowParser) result() []Row {
	start := 0
	for r := range p.rows {
		p.rows[r].Args = p.args[start:p.bounds[r]:p.bounds[r]]
		start = p.bounds[r]
	}
	if p.rows == nil {
		return []Row{}
	}
	return p.rows
}

// notJSON returns the error of a body that is not valid JSON, in encoding/json's words.
func notJSON(body []byte) error {
	var v any
	err := json.Unmarshal(body, &v)
	if err == nil { // not reached: wire.Valid and Unmarshal agree
		err = errors.New("invalid JSON")
	}
	return InvalidInputf("the request body is not valid JSON: %s.", trimJSONError(err))
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
	buf.Grow(resultSize(rows, values))
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

// resultSize is about the size of the result EncodeResult makes, exact when the values
// are raw JSON (an echo, an upstream's answer): a buffer grown by doubling would copy a
// large result twice, and fault in fresh memory for each copy.
func resultSize(rows []Row, values []any) int {
	n := len(`{"data":[]}`)
	var num [20]byte
	for i, v := range values {
		n += len(`[,],`) + len(strconv.AppendInt(num[:0], int64(rows[i].Number), 10))
		switch v := v.(type) {
		case json.RawMessage:
			n += len(v)
		case nil:
			n += len("null")
		default:
			n += 32
		}
	}
	return min(n, MaxResultBytes)
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
		if !isArgOf(v, r) && !wire.Valid(v) {
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
