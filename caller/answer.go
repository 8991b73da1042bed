package caller

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"crypto/md5"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// MaxAnswerBytes is Snowflake's limit on one batch's answer, 10 MB, checked both on the
// body as sent and once decompressed.
const MaxAnswerBytes = 10 << 20

// checkAnswer checks a 200 answer as Snowflake does, in this order: size, Content-MD5 (of
// the body as sent, content-coded, per RFC 1864), decompression per Content-Encoding,
// JSON, the "data" array, the number of rows, then each row's number and single value.
// It returns one value per row.
func checkAnswer(header http.Header, body []byte, rows int) ([]json.RawMessage, *answerError) {
	if len(body) > MaxAnswerBytes {
		return nil, answerErrorf(ErrTooLarge, "the answer is over %d bytes", MaxAnswerBytes)
	}
	if want := header.Get("Content-MD5"); want != "" {
		sum := md5.Sum(body)
		if got := base64.StdEncoding.EncodeToString(sum[:]); got != want {
			return nil, answerErrorf(ErrChecksum, "the header says %s, the body's is %s", want, got)
		}
	}
	body, ae := decode(header.Get("Content-Encoding"), body)
	if ae != nil {
		return nil, ae
	}
	// json.Valid then a walk over the valid text is several times faster than
	// unmarshalling into json.RawMessage, and the values stay slices of the body.
	if !json.Valid(body) {
		var v any
		err := json.Unmarshal(body, &v)
		return nil, answerErrorf(ErrInvalidJSON, "the answer is not valid JSON (%s): %s",
			strings.TrimPrefix(err.Error(), "json: "), bodyForMessage(body[:min(len(body), 200)]))
	}
	data, ok := member(body, "data")
	if !ok {
		return nil, answerErrorf(ErrMissingData, `the answer has no "data" array`)
	}
	dataRows, ok := elements(data)
	if !ok {
		return nil, answerErrorf(ErrMissingData, `the answer's "data" is not an array`)
	}
	if len(dataRows) != rows {
		return nil, answerErrorf(ErrRowCount, "%d rows were sent, %d came back", rows, len(dataRows))
	}
	values := make([]json.RawMessage, rows)
	for i, element := range dataRows {
		row, ok := elements(element)
		if !ok || len(row) == 0 {
			return nil, answerErrorf(ErrRowValues, "row %d of the answer is %s, not [row number, value]", i, bodyForMessage(element[:min(len(element), 100)]))
		}
		if string(row[0]) != strconv.Itoa(i) {
			return nil, answerErrorf(ErrRowOrder, "row %d of the answer is numbered %s", i, bodyForMessage(row[0][:min(len(row[0]), 30)]))
		}
		if len(row) != 2 {
			return nil, answerErrorf(ErrRowValues, "row %d of the answer has %d values, not one", i, len(row)-1)
		}
		values[i] = row[1]
	}
	return values, nil
}

// decode undoes a Content-Encoding, refusing to inflate past MaxAnswerBytes. deflate is
// zlib-wrapped in HTTP, but some servers send it raw, so both are accepted.
func decode(encoding string, body []byte) ([]byte, *answerError) {
	var r io.Reader
	var err error
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "identity":
		return body, nil
	case "gzip", "x-gzip":
		r, err = gzip.NewReader(bytes.NewReader(body))
	case "deflate":
		if r, err = zlib.NewReader(bytes.NewReader(body)); err != nil {
			r, err = flate.NewReader(bytes.NewReader(body)), nil // raw deflate
		}
	default:
		return nil, answerErrorf(ErrInvalidJSON, "the answer's Content-Encoding %q is not gzip or deflate", encoding)
	}
	if err != nil {
		return nil, answerErrorf(ErrInvalidJSON, "the answer is not valid %s: %v", encoding, err)
	}
	var out bytes.Buffer
	if _, err := io.Copy(&out, io.LimitReader(r, MaxAnswerBytes+1)); err != nil {
		return nil, answerErrorf(ErrInvalidJSON, "the answer is not valid %s: %v", encoding, err)
	}
	if out.Len() > MaxAnswerBytes {
		return nil, answerErrorf(ErrTooLarge, "the answer is over %d bytes once decompressed", MaxAnswerBytes)
	}
	return out.Bytes(), nil
}

// The functions below walk JSON text already checked by json.Valid, so they only find
// the boundaries of values.

// member returns the value of key in a top-level object (the last one, as
// encoding/json takes it), or false if doc is not an object or has no such key.
func member(doc []byte, key string) ([]byte, bool) {
	i := skipSpace(doc, 0)
	if i >= len(doc) || doc[i] != '{' {
		return nil, false
	}
	var found []byte
	ok := false
	i = skipSpace(doc, i+1)
	for i < len(doc) && doc[i] == '"' {
		end := skipValue(doc, i)
		name := doc[i:end]
		i = skipSpace(doc, end)
		i = skipSpace(doc, i+1) // the colon
		end = skipValue(doc, i)
		if keyIs(name, key) {
			found, ok = doc[i:end], true
		}
		i = skipSpace(doc, end)
		if i < len(doc) && doc[i] == ',' {
			i = skipSpace(doc, i+1)
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

// elements returns the elements of an array, or false if v is not one.
func elements(v []byte) ([][]byte, bool) {
	i := skipSpace(v, 0)
	if i >= len(v) || v[i] != '[' {
		return nil, false
	}
	out := [][]byte{}
	i = skipSpace(v, i+1)
	for i < len(v) && v[i] != ']' {
		end := skipValue(v, i)
		out = append(out, v[i:end])
		i = skipSpace(v, end)
		if i < len(v) && v[i] == ',' {
			i = skipSpace(v, i+1)
		}
	}
	return out, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		for i++; i < len(b); i++ {
			switch b[i] {
			case '\\':
				i++
			case '"':
				return i + 1
			}
		}
		return i
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipValue(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return i
	default:
		for i < len(b) && b[i] != ',' && b[i] != ']' && b[i] != '}' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
			i++
		}
		return i
	}
}
