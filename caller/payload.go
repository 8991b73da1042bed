package caller

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"io"
	"strconv"
	"sync"
	"unicode/utf8"
)

// Row is one input row: the function's arguments in order, each as the JSON Snowflake
// sends (a JSON string for text, dates and the like; a number kept as written; null for
// NULL).
type Row []json.RawMessage

// Payload is a batch's request body ready to send, compressed as configured. It may be
// sent many times (by Bench), each time as a new batch.
type Payload struct {
	Rows int
	body []byte
}

// Encode builds the request body Snowflake would send for rows,
// {"data":[[0,arg...],[1,arg...],...]}, compressed as configured.
func (c *Client) Encode(rows []Row) (Payload, error) {
	body := EncodeRows(rows)
	if c.cfg.Compression == CompressionNone {
		return Payload{Rows: len(rows), body: body}, nil
	}
	var out bytes.Buffer
	out.Grow(len(body)/4 + 64)
	w := compressors[c.cfg.Compression].Get().(compressor)
	defer compressors[c.cfg.Compression].Put(w)
	w.Reset(&out)
	if _, err := w.Write(body); err != nil {
		return Payload{}, err
	}
	if err := w.Close(); err != nil {
		return Payload{}, err
	}
	return Payload{Rows: len(rows), body: out.Bytes()}, nil
}

// EncodeRows returns {"data":[[0,arg...],[1,arg...],...]} without compression.
func EncodeRows(rows []Row) []byte {
	size := 16
	for _, r := range rows {
		size += 12
		for _, a := range r {
			size += len(a) + 1
		}
	}
	b := make([]byte, 0, size)
	b = append(b, `{"data":[`...)
	for i, r := range rows {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = strconv.AppendInt(b, int64(i), 10)
		for _, a := range r {
			b = append(b, ',')
			b = append(b, a...)
		}
		b = append(b, ']')
	}
	return append(b, "]}"...)
}

type compressor interface {
	io.WriteCloser
	Reset(io.Writer)
}

// compressors are pooled because each gzip or zlib writer holds hundreds of kilobytes.
var compressors = map[Compression]*sync.Pool{
	CompressionGzip:    {New: func() any { return gzip.NewWriter(nil) }},
	CompressionDeflate: {New: func() any { return zlib.NewWriter(nil) }},
}

// TextValue returns s as a JSON string, as Snowflake sends VARCHAR values: only quotes,
// backslashes and control characters escaped (not <, > and & as encoding/json does);
// invalid UTF-8 becomes U+FFFD.
func TextValue(s string) json.RawMessage {
	return appendJSONString(make([]byte, 0, len(s)+2), s)
}

func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
