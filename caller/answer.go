package caller

import (
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/asyncfn/asyncfn/internal/wire"
)

// MaxAnswerBytes is Snowflake's limit on one batch's answer, 10 MB, checked both on the
// body as sent and once decompressed.
const MaxAnswerBytes = 10 << 20

// CheckAnswer checks a 200 answer to a batch of the given number of rows as Snowflake
// does (see checkAnswer) and returns one value per row, slices of body. Its error says what the
// service did wrong ("3 rows were sent, 2 came back"); errors.Is tells its class
// (ErrInvalidJSON, ErrMissingData, ErrRowCount, ErrRowOrder, ErrRowValues, ErrTooLarge,
// ErrChecksum). Packages upstream and process check the answers of what they call with it.
func CheckAnswer(header http.Header, body []byte, rows int) ([]json.RawMessage, error) {
	values, ae := checkAnswer(header, body, rows)
	if ae != nil {
		return nil, ae
	}
	return values, nil
}

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
	// A validating scan (wire.Valid) then a walk over the valid text is several times
	// faster than unmarshalling into json.RawMessage, and the values stay slices of the body.
	if !wire.Valid(body) {
		var v any
		err := json.Unmarshal(body, &v)
		return nil, answerErrorf(ErrInvalidJSON, "the answer is not valid JSON (%s): %s",
			strings.TrimPrefix(err.Error(), "json: "), bodyForMessage(body[:min(len(body), 200)]))
	}
	data, ok := wire.Member(body, "data")
	if !ok {
		return nil, answerErrorf(ErrMissingData, `the answer has no "data" array`)
	}
	dataRows, ok := wire.Elements(data)
	if !ok {
		return nil, answerErrorf(ErrMissingData, `the answer's "data" is not an array`)
	}
	if len(dataRows) != rows {
		return nil, answerErrorf(ErrRowCount, "%d rows were sent, %d came back", rows, len(dataRows))
	}
	values := make([]json.RawMessage, rows)
	for i, element := range dataRows {
		row, ok := wire.Elements(element)
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
		r, err = wire.NewDeflateReader(bytes.NewReader(body))
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
