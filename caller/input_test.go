package caller

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// readAll returns the reader's columns and rows, each row as its JSON arguments joined
// by " | ".
func readAll(t *testing.T, r RowReader) (columns []string, rows []string) {
	t.Helper()
	for {
		row, err := r.Read()
		if err == io.EOF {
			return r.Columns(), rows
		}
		if err != nil {
			t.Fatal(err)
		}
		args := make([]string, len(row))
		for i, a := range row {
			if !json.Valid(a) {
				t.Fatalf("argument %q is not JSON", a)
			}
			args[i] = string(a)
		}
		rows = append(rows, strings.Join(args, " | "))
	}
}

func TestArgsReader(t *testing.T) {
	t.Parallel()
	columns, rows := readAll(t, ArgsReader([]string{"hello", `say "hi"`, "<b>&</b>", ""}, ArgType{}))
	want := []string{`"hello"`, `"say \"hi\""`, `"<b>&</b>"`, `""`}
	if strings.Join(columns, ",") != "$1" || strings.Join(rows, "\n") != strings.Join(want, "\n") {
		t.Errorf("columns %q rows %q, want $1 and %q", columns, rows, want)
	}
}

func TestReaders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		input   string
		opts    InputOptions
		columns string
		rows    []string
	}{
		{
			name:    "lines",
			input:   "first\r\nsecond line\n\nlast without newline",
			opts:    InputOptions{Format: FormatLines},
			columns: "$1",
			rows:    []string{`"first"`, `"second line"`, `""`, `"last without newline"`},
		},
		{
			name:    "lines, column 1 chosen",
			input:   "a\nb\n",
			opts:    InputOptions{Format: FormatLines, Columns: []string{"1"}},
			columns: "$1",
			rows:    []string{`"a"`, `"b"`},
		},
		{
			name:    "lines with tabs and control characters",
			input:   "a\tb\x01\n",
			columns: "$1",
			rows:    []string{`"a\tb\u0001"`},
		},
		{
			name:    "csv, all columns",
			input:   "id,text\n1,hello\n2,\"with, comma\"\n3,\"two\nlines\"\n",
			opts:    InputOptions{Format: FormatCSV},
			columns: "id,text",
			rows:    []string{`"1" | "hello"`, `"2" | "with, comma"`, `"3" | "two\nlines"`},
		},
		{
			name:    "csv, columns by name and position, reordered",
			input:   "\ufeffid,Text,lang\n1,hello,en\n2,bonjour,fr\n",
			opts:    InputOptions{Format: FormatCSV, Columns: []string{"text", "1"}},
			columns: "Text,id",
			rows:    []string{`"hello" | "1"`, `"bonjour" | "2"`},
		},
		{
			name:    "csv without a header row",
			input:   "1,hello\n2,bye\n",
			opts:    InputOptions{Format: FormatCSV, NoHeaderRow: true, Columns: []string{"$2"}},
			columns: "$2",
			rows:    []string{`"hello"`, `"bye"`},
		},
		{
			name:    "tsv",
			input:   "id\ttext\n1\tsays \"hi\"\n2\tplain\n",
			opts:    InputOptions{Format: FormatTSV, Columns: []string{"text"}},
			columns: "text",
			rows:    []string{`"says \"hi\""`, `"plain"`},
		},
		{
			name:    "jsonl objects: key order kept, missing keys NULL, numbers exact",
			input:   `{"b":1.00000000000000000001,"a":{"x":[1,2]}}` + "\n\n" + `{"a":"only a"}` + "\n" + `{"b":null,"a":true,"c":3}` + "\n",
			opts:    InputOptions{Format: FormatJSONL},
			columns: "b,a",
			rows:    []string{`1.00000000000000000001 | {"x":[1,2]}`, `null | "only a"`, `null | true`},
		},
		{
			name:    "jsonl objects, columns by name, by position and absent from the first line",
			input:   `{"id":7,"text":"hi"}` + "\n" + `{"id":8,"text":"yo","extra":"x"}` + "\n",
			opts:    InputOptions{Format: FormatJSONL, Columns: []string{"TEXT", "1", "extra"}},
			columns: "text,id,extra",
			rows:    []string{`"hi" | 7 | null`, `"yo" | 8 | "x"`},
		},
		{
			name:    "jsonl objects, a column first in a later line of the first batch, case aside",
			input:   `{"id":1}` + "\n" + `{"id":2}` + "\n" + `{"id":3,"Text":"c"}` + "\n" + `{"id":4}` + "\n" + `{"Text":"e"}` + "\n",
			opts:    InputOptions{Format: FormatJSONL, Columns: []string{"text", "id"}, BatchRows: 3},
			columns: "Text,id",
			rows:    []string{`null | 1`, `null | 2`, `"c" | 3`, `null | 4`, `"e" | null`},
		},
		{
			name:    "jsonl arrays",
			input:   `[1,"a",{"k":1}]` + "\n" + `[2,"b"]` + "\n",
			opts:    InputOptions{Format: FormatJSONL, Columns: []string{"3", "2"}},
			columns: "$3,$2",
			rows:    []string{`{"k":1} | "a"`, `null | "b"`},
		},
		{
			name:    "jsonl scalars",
			input:   "\"text\"\n12345678901234567890123\nnull\n{\"an\":\"object\"}\n",
			opts:    InputOptions{Format: FormatJSONL},
			columns: "$1",
			rows:    []string{`"text"`, `12345678901234567890123`, `null`, `{"an":"object"}`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := NewReader(strings.NewReader(tt.input), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			columns, rows := readAll(t, r)
			if strings.Join(columns, ",") != tt.columns {
				t.Errorf("columns %q, want %s", columns, tt.columns)
			}
			if strings.Join(rows, "\n") != strings.Join(tt.rows, "\n") {
				t.Errorf("rows\n%s\nwant\n%s", strings.Join(rows, "\n"), strings.Join(tt.rows, "\n"))
			}
		})
	}
}

func TestReaderErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, input string
		opts        InputOptions
		want        string // in the error from NewReader or a Read
	}{
		{"unknown column", "id,text\n1,a\n", InputOptions{Format: FormatCSV, Columns: []string{"nope"}}, `column "nope": the input's columns are id, text`},
		{"column out of range", "id,text\n1,a\n", InputOptions{Format: FormatCSV, Columns: []string{"3"}}, "column 3: the input has columns 1 to 2"},
		{"lines have one column", "a\n", InputOptions{Format: FormatLines, Columns: []string{"2"}}, "column 2"},
		{"empty csv", "", InputOptions{Format: FormatCSV}, "the csv input is empty"},
		{"ragged csv", "a,b\n1,2\n3\n", InputOptions{Format: FormatCSV}, "wrong number of fields"},
		{"empty jsonl", "\n\n", InputOptions{Format: FormatJSONL}, "the jsonl input is empty"},
		{"bad json line", "{\"a\":1}\n{\"a\":\n", InputOptions{Format: FormatJSONL}, "line 2:"},
		{"object then array", "{\"a\":1}\n[1]\n", InputOptions{Format: FormatJSONL}, "line 2: cannot unmarshal array"},
		{"jsonl key in no line", `{"id":1,"txt":"a"}` + "\n" + `{"id":2,"more":3}` + "\n", InputOptions{Format: FormatJSONL, Columns: []string{"id", "text"}}, `column "text": the input's columns are id, txt, more`},
		{"jsonl key after the first batch", `{"id":1}` + "\n" + `{"id":2}` + "\n" + `{"text":"c"}` + "\n", InputOptions{Format: FormatJSONL, Columns: []string{"text"}, BatchRows: 2}, `column "text": the input's columns are id`},
		{"jsonl bad line before the key", `{"id":1}` + "\n" + `{"id":` + "\n" + `{"text":"c"}` + "\n", InputOptions{Format: FormatJSONL, Columns: []string{"text"}}, "line 2: unexpected end of JSON input"},
		{"jsonl array line before the key", `{"id":1}` + "\n" + `[1]` + "\n", InputOptions{Format: FormatJSONL, Columns: []string{"text"}}, "line 2: cannot unmarshal array"},
		{"bad first scalar", "nope\n", InputOptions{Format: FormatJSONL}, "line 1: not a JSON value"},
		{"unknown format", "", InputOptions{Format: "xml"}, `input format "xml"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := NewReader(strings.NewReader(tt.input), tt.opts)
			for err == nil {
				_, err = r.Read()
			}
			if errors.Is(err, io.EOF) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestFormats(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]Format{
		"rows.csv": FormatCSV, "ROWS.TSV": FormatTSV, "x.tab": FormatTSV, "a.jsonl": FormatJSONL,
		"a.ndjson": FormatJSONL, "a.json": FormatJSONL, "notes.txt": FormatLines, "-": FormatLines,
	} {
		if got := FormatOf(name); got != want {
			t.Errorf("FormatOf(%q) = %s, want %s", name, got, want)
		}
	}
	if f, err := ParseFormat("TSV"); err != nil || f != FormatTSV {
		t.Errorf("ParseFormat(TSV) = %s, %v", f, err)
	}
	if _, err := ParseFormat("parquet"); err == nil {
		t.Error("ParseFormat(parquet) accepted")
	}
}

func TestTextValue(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"plain":              `"plain"`,
		`quote " and \ `:     `"quote \" and \\ "`,
		"<html>&amp;":        `"<html>&amp;"`,
		"tab\there\nnl\r":    `"tab\there\nnl\r"`,
		"\x00\x1f":           `"\u0000\u001f"`,
		"é \u2028 日本":        "\"é \u2028 日本\"",
		"bad \xff utf8 \xc3": `"bad \ufffd utf8 \ufffd"`,
	} {
		if got := string(TextValue(in)); got != want {
			t.Errorf("TextValue(%q) = %s, want %s", in, got, want)
		}
	}
}

// FuzzTextValue checks that TextValue always makes valid JSON that decodes to what
// encoding/json would send for the same string.
func FuzzTextValue(f *testing.F) {
	for _, s := range []string{"", "a\"b\\c", "\x00\n\t", "é日本\u2028", "\xff\xc3", "<&>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := TextValue(s)
		var decoded, want string
		if err := json.Unmarshal(got, &decoded); err != nil {
			t.Fatalf("TextValue(%q) = %s: %v", s, got, err)
		}
		reference, _ := json.Marshal(s)
		json.Unmarshal(reference, &want)
		if decoded != want {
			t.Fatalf("TextValue(%q) decodes to %q, encoding/json's to %q", s, decoded, want)
		}
	})
}

// FuzzReaders checks that no input makes a reader panic, and that every row it returns
// is valid JSON with one argument per column.
func FuzzReaders(f *testing.F) {
	f.Add("a,b\n1,2\n", "csv")
	f.Add("a\tb\n1\t\"2\n", "tsv")
	f.Add("{\"a\":1}\n{\"a\":[1,\n", "jsonl")
	f.Add("[1,2]\n[3]\n\"x\"\n", "jsonl")
	f.Add("line\r\nline\n\n", "lines")
	f.Fuzz(func(t *testing.T, input, format string) {
		r, err := NewReader(strings.NewReader(input), InputOptions{Format: Format(format)})
		if err != nil {
			return
		}
		for range 10000 {
			row, err := r.Read()
			if err != nil {
				return
			}
			if len(row) != len(r.Columns()) {
				t.Fatalf("row %q for columns %q", row, r.Columns())
			}
			for _, arg := range row {
				if !json.Valid(arg) {
					t.Fatalf("argument %q is not JSON", arg)
				}
			}
		}
	})
}
