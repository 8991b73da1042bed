package asyncfn_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/asyncfn/asyncfn"
)

// rowsOf returns n rows numbered 0..n-1 without arguments.
func rowsOf(n int) []asyncfn.Row {
	rows := make([]asyncfn.Row, n)
	for i := range rows {
		rows[i].Number = i
	}
	return rows
}

// checkInvalidInput fails unless err is an InvalidInput *asyncfn.Error whose message is one
// sentence on one line.
func checkInvalidInput(t *testing.T, err error) {
	t.Helper()
	var e *asyncfn.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *asyncfn.Error", err, err)
	}
	if e.Kind != asyncfn.InvalidInput {
		t.Errorf("error kind = %q, want %q", e.Kind, asyncfn.InvalidInput)
	}
	if e.Message == "" || strings.ContainsAny(e.Message, "\r\n") || !strings.HasSuffix(e.Message, ".") {
		t.Errorf("error message %q is not one sentence on one line ending with '.'", e.Message)
	}
}

func TestParseRows(t *testing.T) {
	t.Parallel()
	rows, err := asyncfn.ParseRows([]byte(`{"data": [[0, "a", 1.50, null], [1], [2, {"x": [1, 2]}, 12345678901234567890123]]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 {
		t.Fatalf("got %d rows, want 3", len(rows))
	}
	want := [][]string{{`"a"`, `1.50`, `null`}, {}, {`{"x": [1, 2]}`, `12345678901234567890123`}}
	for i, r := range rows {
		if r.Number != i {
			t.Errorf("row %d: number %d", i, r.Number)
		}
		if len(r.Args) != len(want[i]) {
			t.Fatalf("row %d: %d args, want %d", i, len(r.Args), len(want[i]))
		}
		for j, a := range r.Args {
			if string(a) != want[i][j] {
				t.Errorf("row %d arg %d = %s, want %s (numbers keep their text)", i, j, a, want[i][j])
			}
		}
	}

	empty, err := asyncfn.ParseRows([]byte(`{"data": []}`))
	if err != nil || len(empty) != 0 {
		t.Errorf(`ParseRows({"data": []}) = %v, %v; want no rows, no error`, empty, err)
	}
}

func TestParseRowsErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body, want string
	}{
		{"not JSON", `{"data": [[0, 1]`, "not valid JSON"},
		{"garbage", `hello`, "not valid JSON"},
		{"empty", ``, "not valid JSON"},
		{"array body", `[[0, 1]]`, "not a JSON object"},
		{"string body", `"x"`, "not a JSON object"},
		{"no data", `{"rows": [[0, 1]]}`, `no "data"`},
		{"null body", `null`, `no "data"`},
		{"null data", `{"data": null}`, `no "data"`},
		{"data not array", `{"data": {"0": 1}}`, `"data" is not an array`},
		{"data a number", `{"data": 5}`, `"data" is not an array`},
		{"row not array", `{"data": [[0, 1], 7]}`, "row 1 of the request is not an array"},
		{"row empty", `{"data": [[]]}`, "row 0 of the request is not an array"},
		{"row object", `{"data": [{"0": 1}]}`, "row 0 of the request is not an array"},
		{"starts at 1", `{"data": [[1, "a"]]}`, "row 0 of the request is numbered 1"},
		{"gap", `{"data": [[0, "a"], [2, "b"]]}`, "row 1 of the request is numbered 2"},
		{"out of order", `{"data": [[1, "a"], [0, "b"]]}`, "numbered 1"},
		{"repeated", `{"data": [[0, "a"], [0, "b"]]}`, "row 1 of the request is numbered 0"},
		{"string number", `{"data": [["0", "a"]]}`, "row 0 of the request does not start with its row number"},
		{"float number", `{"data": [[0.0, "a"]]}`, "row 0 of the request does not start with its row number"},
		{"null number", `{"data": [[0, 1], [null, 2]]}`, "row 1 of the request does not start with its row number"},
		{"huge number", `{"data": [[99999999999999999999999, "a"]]}`, "row 0 of the request does not start with its row number"},
		{"negative number", `{"data": [[-1, "a"]]}`, "row 0 of the request is numbered -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := asyncfn.ParseRows([]byte(tc.body))
			if err == nil {
				t.Fatalf("ParseRows(%s) = %d rows, want an error", tc.body, len(rows))
			}
			checkInvalidInput(t, err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// TestParseRowsLastDataWins: of duplicate "data" keys, the last is read as if it were the
// only one, whatever the others hold. (encoding/json would also report the type error of
// an earlier one, so parseRowsReference does not cover these.)
func TestParseRowsLastDataWins(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ body, want string }{
		{`{"data":5,"data":[[0,"a"]]}`, `[["a"]]`},
		{`{"data":[[1],{}],"data":[[0],[1,2]]}`, `[[],[2]]`},
		{`{"data":[[0]],"Data":[[0,1]]}`, `[[1]]`},
		{`{"data":[[0]],"data":[[1]]}`, "row 0 of the request is numbered 1; rows must be numbered 0, 1, 2, ... in order."},
		{`{"data":[[0]],"data":null}`, `the request body has no "data" array of rows.`},
		{"{\"data\":[[0,\"\xff\"]],\"data\":[[0]]}", "the request body holds text that is not valid UTF-8; send text encoded as UTF-8, as Snowflake does."},
		{"{\"data\":[[\"\xff\"]],\"data\":[[0],[1,\"\xfe\"]]}", "row 1 of the request holds text that is not valid UTF-8; send text encoded as UTF-8, as Snowflake does."},
	} {
		rows, err := asyncfn.ParseRows([]byte(tc.body))
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			args := make([][]json.RawMessage, len(rows))
			for i, r := range rows {
				args[i] = r.Args
			}
			b, _ := json.Marshal(args)
			got = string(b)
		}
		if got != tc.want {
			t.Errorf("ParseRows(%q) = %s, want %s", tc.body, got, tc.want)
		}
	}
}

// TestParseRowsDepth: arrays and objects nested deeper than encoding/json allows (10000,
// counting those around them) make the body invalid JSON wherever they stand.
func TestParseRowsDepth(t *testing.T) {
	t.Parallel()
	nest := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, n := range []int{9996, 9997, 9998} {
		for _, body := range []string{
			`{"data":[[0,` + nest(n) + `]]}`,
			`{"data":[[1,` + nest(n) + `]]}`,
			`{"data":[[0],` + nest(n+1) + `]}`,
			`{"x":` + nest(n+2) + `,"data":[]}`,
			`{"data":` + nest(n+2) + `,"data":[]}`,
		} {
			_, wantErr := parseRowsReference([]byte(body))
			got := ""
			if _, err := asyncfn.ParseRows([]byte(body)); err != nil {
				got = err.Error()
			}
			if got != wantErr {
				t.Errorf("ParseRows of %.20s... nested %d deep: error %q, want %q", body, n, got, wantErr)
			}
		}
	}
}

// TestParseRowsMessageOneLine: a row "number" that is a JSON value with a newline inside
// (legal whitespace) must not make the message, which Snowflake shows in the SQL error,
// span lines. FuzzParseRows found this when the message quoted the value as sent.
func TestParseRowsMessageOneLine(t *testing.T) {
	t.Parallel()
	_, err := asyncfn.ParseRows([]byte("{\"data\": [[{\"a\":\n1}, 2]]}"))
	if err == nil {
		t.Fatal("ParseRows accepted an object as a row number")
	}
	checkInvalidInput(t, err)
}

func TestEncodeResult(t *testing.T) {
	t.Parallel()
	rows := rowsOf(6)
	values := []any{
		nil,
		json.RawMessage(`{"kept": [1,  2]}`),
		"<b>&</b>",
		3.5,
		map[string]int{"n": 1},
		[]any{true, nil},
	}
	got, err := asyncfn.EncodeResult(rows, values)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"data":[[0,null],[1,{"kept": [1,  2]}],[2,"<b>&</b>"],[3,3.5],[4,{"n":1}],[5,[true,null]]]}`
	if string(got) != want {
		t.Errorf("EncodeResult =\n%s\nwant\n%s", got, want)
	}
	if !json.Valid(got) {
		t.Error("EncodeResult's output is not valid JSON")
	}

	none, err := asyncfn.EncodeResult(nil, nil)
	if err != nil || string(none) != `{"data":[]}` {
		t.Errorf("EncodeResult of no rows = %s, %v", none, err)
	}
}

func TestEncodeResultErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		rows   int
		values []any
		want   string
	}{
		{"too few values", 3, []any{1, 2}, "returned 2 values for 3 rows"},
		{"too many values", 1, []any{1, 2}, "returned 2 values for 1 rows"},
		{"invalid raw JSON", 2, []any{1, json.RawMessage(`{"a":`)}, "invalid JSON for row 1"},
		{"empty raw JSON", 1, []any{json.RawMessage(``)}, "invalid JSON for row 0"},
		{"unencodable value", 2, []any{math.NaN(), 1}, "row 0 cannot be encoded"},
		{"unencodable channel", 1, []any{make(chan int)}, "row 0 cannot be encoded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := asyncfn.EncodeResult(rowsOf(tc.rows), tc.values)
			if err == nil {
				t.Fatalf("EncodeResult = %s, want an error", got)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestEncodeResultTooLarge(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 1<<20)
	values := make([]any, 11)
	for i := range values {
		values[i] = big
	}
	_, err := asyncfn.EncodeResult(rowsOf(len(values)), values)
	if err == nil || !strings.Contains(err.Error(), "10 MB") {
		t.Fatalf("EncodeResult of 11 MB = %v, want an error naming the 10 MB limit", err)
	}

	// Well under the limit is fine.
	got, err := asyncfn.EncodeResult(rowsOf(2), values[:2])
	if err != nil || len(got) != 2<<20+24 {
		t.Fatalf("EncodeResult of 2 MB = %d bytes, %v", len(got), err)
	}
}

// TestEncodeResultLimitIsExact: a result is either at most MaxResultBytes long or refused;
// the closing "]}" must count too.
func TestEncodeResultLimitIsExact(t *testing.T) {
	t.Parallel()
	// {"data":[[0,"xxx..."]]}: 9 bytes before the row, 4 of row framing, 2 quotes, then "]}":
	// the row ends exactly at the limit, the body 2 bytes past it.
	n := asyncfn.MaxResultBytes - 9 - 4 - 2
	got, err := asyncfn.EncodeResult(rowsOf(1), []any{strings.Repeat("x", n)})
	if err == nil && len(got) > asyncfn.MaxResultBytes {
		t.Errorf("EncodeResult returned %d bytes, over MaxResultBytes (%d), without an error", len(got), asyncfn.MaxResultBytes)
	}
}

func FuzzParseRows(f *testing.F) {
	for _, seed := range []string{
		`{"data": [[0, "a"], [1, 2], [2, null]]}`,
		`{"data": []}`,
		`{"data": [[0]]}`,
		`{"data": [[0, {"k": [1, 2.5e3, true]}]]}`,
		`{"data": [[1, "a"]]}`,
		`{"data": [0]}`,
		`{"data": null}`,
		`{"data": "x"}`,
		`[]`,
		`{`,
		``,
		`{"data": [[-0, 1]]}`,
		`{"data": [["0", 1]]}`,
		`{"DATA": [[0, 1]]}`,
		"{\"data\": [[0, \"\xff\xfe\"]]}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rows, err := asyncfn.ParseRows(body)
		if err != nil {
			if rows != nil {
				t.Errorf("ParseRows returned rows with an error")
			}
			checkInvalidInput(t, err)
			return
		}
		for i, r := range rows {
			if r.Number != i {
				t.Fatalf("row %d has number %d", i, r.Number)
			}
			for _, a := range r.Args {
				if !json.Valid(a) {
					t.Fatalf("row %d has an invalid argument %q", i, a)
				}
			}
		}
		// What parses is answered: Echo's output encodes and has one row per input row.
		out, err := asyncfn.EncodeResult(rows, firstArgs(rows))
		if err != nil {
			t.Fatalf("EncodeResult of parsed rows: %v", err)
		}
		var res struct{ Data [][]json.RawMessage }
		if err := json.Unmarshal(out, &res); err != nil || len(res.Data) != len(rows) {
			t.Fatalf("EncodeResult = %s (%v), want %d rows", out, err, len(rows))
		}
		if !utf8.Valid(out) {
			t.Fatalf("EncodeResult = %q, not valid UTF-8", out)
		}
	})
}

func firstArgs(rows []asyncfn.Row) []any {
	out := make([]any, len(rows))
	for i, r := range rows {
		if len(r.Args) > 0 {
			out[i] = r.Args[0]
		}
	}
	return out
}

// parseRowsReference is ParseRows as encoding/json reads the body: the specification that
// the fast scanner must match, row for row and error for error.
func parseRowsReference(body []byte) ([]asyncfn.Row, string) {
	var req struct {
		Data *[]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			if typeErr.Field == "data" {
				return nil, `the request body's "data" is not an array of rows.`
			}
			return nil, `the request body is not a JSON object of the form {"data": [[0, ...], ...]}.`
		}
		return nil, "the request body is not valid JSON: " + strings.TrimPrefix(err.Error(), "json: ") + "."
	}
	if req.Data == nil {
		return nil, `the request body has no "data" array of rows.`
	}
	rows := make([]asyncfn.Row, len(*req.Data))
	for i, raw := range *req.Data {
		var cols []json.RawMessage
		if err := json.Unmarshal(raw, &cols); err != nil || len(cols) == 0 {
			return nil, fmt.Sprintf("row %d of the request is not an array starting with its row number.", i)
		}
		n, err := strconv.Atoi(string(cols[0]))
		if err != nil {
			return nil, fmt.Sprintf("row %d of the request does not start with its row number; rows must be numbered 0, 1, 2, ... in order.", i)
		}
		if n != i {
			return nil, fmt.Sprintf("row %d of the request is numbered %d; rows must be numbered 0, 1, 2, ... in order.", i, n)
		}
		rows[i] = asyncfn.Row{Number: n, Args: cols[1:]}
	}
	if !utf8.Valid(body) {
		for _, r := range rows {
			for _, a := range r.Args {
				if !utf8.Valid(a) {
					return nil, fmt.Sprintf("row %d of the request holds text that is not valid UTF-8; send text encoded as UTF-8, as Snowflake does.", r.Number)
				}
			}
		}
		return nil, "the request body holds text that is not valid UTF-8; send text encoded as UTF-8, as Snowflake does."
	}
	return rows, ""
}

// TestParseRowsInvalidUTF8 (correctness issue, defect 6): raw bytes that are not UTF-8
// are refused with a sentence that names the row, wherever they stand.
func TestParseRowsInvalidUTF8(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"{\"data\":[[0,\"ok\"],[1,\"\xff\xfe\"]]}", "row 1 of the request holds text that is not valid UTF-8"},
		{"{\"data\":[[0,{\"k\xff\":1}]]}", "row 0 of the request holds text that is not valid UTF-8"},
		{"{\"x\xff\":1,\"data\":[[0,\"ok\"]]}", "the request body holds text that is not valid UTF-8"},
	} {
		rows, err := asyncfn.ParseRows([]byte(tc.body))
		if err == nil || rows != nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("ParseRows(%q) = %v, %v; want an error starting %q", tc.body, rows, err, tc.want)
			continue
		}
		checkInvalidInput(t, err)
	}
	if _, err := asyncfn.ParseRows([]byte(`{"data":[[0,"h\u00e9 \ud83d\ude00 ok"],[1,"é😀"]]}`)); err != nil {
		t.Errorf("valid UTF-8 and escapes refused: %v", err)
	}
}

// TestEncodeResultNeverInvalidUTF8 (defect 6): whatever a function returns, the answer is
// valid UTF-8 and valid JSON; invalid bytes become U+FFFD.
func TestEncodeResultNeverInvalidUTF8(t *testing.T) {
	rows := []asyncfn.Row{{Number: 0}, {Number: 1}, {Number: 2}, {Number: 3}}
	out, err := asyncfn.EncodeResult(rows, []any{
		json.RawMessage("{\"k\":\"a\xffb\",\"n\":12345678901234567890}"),
		"c\xfe",
		map[string]any{"s": "\xff"},
		map[string]any{"r": json.RawMessage("\"c\xfed\"")}, // raw JSON nested: encoding/json copies it as it is
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"data":[[0,{"k":"a�b","n":12345678901234567890}],[1,"c�"],[2,{"s":"�"}],[3,{"r":"c�d"}]]}`
	decode := func(b []byte) any {
		var v any
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		return v
	}
	if !utf8.Valid(out) || !reflect.DeepEqual(decode(out), decode([]byte(want))) {
		t.Errorf("EncodeResult = %q, want the values of %q", out, want)
	}
}

// FuzzParseRowsMatchesEncodingJSON checks the fast scanner against encoding/json.
func FuzzParseRowsMatchesEncodingJSON(f *testing.F) {
	for _, seed := range []string{
		`{"data":[[0,"a",1,null],[1,{"x":[1,2]},true]]}`, `{"data":[]}`, `{"DATA":[[0]]}`,
		`{"data":[[0]],"data":[[0,1]]}`, `{"d\u0061ta":[[0,"x"]]}`, `{"data":null}`, `null`,
		`[1]`, `"x"`, `{"data":"x"}`, `{"data":[1]}`, `{"data":[[]]}`, `{"data":[[1]]}`,
		`{"data":[["0"]]}`, `{"data":[[0.0]]}`, ` { "data" : [ [ 0 , "a\"]" ] , [ 1 ] ] } `,
		`{"other":{"data":[[5]]},"data":[[0,[[]],{}]]}`, `{"data":[[-0]]}`, `{"data":[[1e0]]}`,
		`{"data":[[0,1],]}`, `{"data":[[0,]]}`, `{"data":[[0 1]]}`, `{"data":[[0]]}x`, `{"data":[[0]],}`,
		`{"a" 1,"data":[[0]]}`, `{"data":[[0]] "a":1}`, `{"data":[[01]]}`, `{"data":[[0]]`,
		`{"data":[[0]],"data":[[1]]}`, `{"data":[[1]],"data":null}`,
		"{\"data\":[[0,\"\xff\"]],\"data\":[[0,\"ok\"]]}", "{\"data\":[[0,\"ok\"],[1,\"\xc3\"]],\"data\":[[0,\"\xff\"]]}",
		"{\"data\":[[\"\xff\"]]}", "{\"data\":[[0],[2,\"\xff\"]]}", "{\"data\":[[0,\"\xff\"],[1,{\"\xfe\":\"\x80\"}]]}",
		"{\"data\":[[0,\"ok\"]],\"\xff\":1}", "\"\xff\"", "[\"\xff\"]", "{\"data\":[[0,\"\xff\"],]}",
		`{"data":[[0,"\u00e9\"\\"]]}`, `{"data":[[0,"\u00zz"]]}`, " \t\r\n{\"data\":[]}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		want, wantErr := parseRowsReference(body)
		got, err := asyncfn.ParseRows(body)
		switch {
		case wantErr != "":
			if err == nil || err.Error() != wantErr {
				t.Fatalf("ParseRows(%q) error %v, want %q", body, err, wantErr)
			}
		case err != nil:
			t.Fatalf("ParseRows(%q) error %v, want rows %v", body, err, want)
		case len(got) != len(want):
			t.Fatalf("ParseRows(%q) = %d rows, want %d", body, len(got), len(want))
		default:
			for i := range want {
				if got[i].Number != want[i].Number || len(got[i].Args) != len(want[i].Args) {
					t.Fatalf("ParseRows(%q) row %d = %+v, want %+v", body, i, got[i], want[i])
				}
				for j := range want[i].Args {
					if !bytes.Equal(got[i].Args[j], want[i].Args[j]) {
						t.Fatalf("ParseRows(%q) row %d arg %d = %s, want %s", body, i, j, got[i].Args[j], want[i].Args[j])
					}
				}
			}
		}
	})
}

// benchBody is a 4,096-row batch as the benchmarks send it.
func benchBody() []byte {
	var sb strings.Builder
	sb.WriteString(`{"data":[`)
	for i := range 4096 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `[%d,"row %d: the quick brown fox jumps over the lazy dog",%d]`, i, i, i*7)
	}
	sb.WriteString(`]}`)
	return []byte(sb.String())
}

// BenchmarkParseRows decodes a 4,096-row batch, the hot path of every POST and batch run.
func BenchmarkParseRows(b *testing.B) {
	body := benchBody()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := asyncfn.ParseRows(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeResult encodes the result of a 4,096-row batch whose values are raw JSON
// (an echo, an upstream's answer), the other half of every batch run.
func BenchmarkEncodeResult(b *testing.B) {
	rows, err := asyncfn.ParseRows(benchBody())
	if err != nil {
		b.Fatal(err)
	}
	values := make([]any, len(rows))
	for i, r := range rows {
		values[i] = json.RawMessage(append([]byte(nil), r.Args[0]...)) // not an argument: checked
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := asyncfn.EncodeResult(rows, values); err != nil {
			b.Fatal(err)
		}
	}
}
