package asyncfn

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// MaxResultBytes is Snowflake's limit on the size of one batch's response.
const MaxResultBytes = 10 << 20

// ParseRows decodes a Snowflake request body, {"data": [[0, arg...], [1, arg...], ...]},
// into rows. Row numbers must be 0, 1, 2, ... in order, as Snowflake sends them. The error
// is an InvalidInput *Error whose message is one sentence for the SQL user.
func ParseRows(body []byte) ([]Row, error) {
	var req struct {
		Data *[]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		var typeErr *json.UnmarshalTypeError
		if asTypeError(err, &typeErr) {
			if typeErr.Field == "data" {
				return nil, InvalidInputf("the request body's \"data\" is not an array of rows.")
			}
			return nil, InvalidInputf("the request body is not a JSON object of the form {\"data\": [[0, ...], ...]}.")
		}
		return nil, InvalidInputf("the request body is not valid JSON: %s.", trimJSONError(err))
	}
	if req.Data == nil {
		return nil, InvalidInputf("the request body has no \"data\" array of rows.")
	}
	rows := make([]Row, len(*req.Data))
	for i, raw := range *req.Data {
		var cols []json.RawMessage
		if err := json.Unmarshal(raw, &cols); err != nil || len(cols) == 0 {
			return nil, InvalidInputf("row %d of the request is not an array starting with its row number.", i)
		}
		n, err := strconv.Atoi(string(cols[0]))
		if err != nil || n != i {
			return nil, InvalidInputf("row %d of the request is numbered %s; rows must be numbered 0, 1, 2, ... in order.", i, truncate(cols[0], 20))
		}
		rows[i] = Row{Number: n, Args: cols[1:]}
	}
	return rows, nil
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
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
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
		switch v := v.(type) {
		case nil:
			buf.WriteString("null")
		case json.RawMessage:
			if !json.Valid(v) {
				return nil, fmt.Errorf("the function returned invalid JSON for row %d", rows[i].Number)
			}
			buf.Write(v)
		default:
			if err := enc.Encode(v); err != nil {
				return nil, fmt.Errorf("the function's value for row %d cannot be encoded as JSON: %v", rows[i].Number, err)
			}
			buf.Truncate(buf.Len() - 1) // Encode's newline
		}
		buf.WriteByte(']')
		if buf.Len() > MaxResultBytes {
			return nil, fmt.Errorf("the result is over Snowflake's %d MB limit for one batch; lower the function's MAX_BATCH_ROWS", MaxResultBytes>>20)
		}
	}
	buf.WriteString("]}")
	return buf.Bytes(), nil
}

func asTypeError(err error, target **json.UnmarshalTypeError) bool {
	t, ok := err.(*json.UnmarshalTypeError)
	if ok {
		*target = t
	}
	return ok
}

// trimJSONError drops the package prefix from encoding/json's messages.
func trimJSONError(err error) string {
	return string(bytes.TrimPrefix([]byte(err.Error()), []byte("json: ")))
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}
