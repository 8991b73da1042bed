package caller

import (
	"encoding/json"
	"strings"
	"testing"
)

// outcome makes an outcome of text rows answered with the given JSON values.
func outcome(index, firstRow int, args []string, values ...string) Outcome {
	o := Outcome{Index: index, FirstRow: firstRow}
	for i, a := range args {
		o.Rows = append(o.Rows, Row{TextValue(a)})
		o.Answer.Values = append(o.Answer.Values, json.RawMessage(values[i]))
	}
	return o
}

func render(t *testing.T, opts OutputOptions, outcomes ...Outcome) string {
	t.Helper()
	var out strings.Builder
	w, err := NewOutputWriter(&out, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range outcomes {
		if err := w.Write(o); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestOutput(t *testing.T) {
	t.Parallel()
	answered := outcome(0, 0, []string{"hello", "line\nbreak", "n", "obj"}, `"hello"`, `"line\nbreak"`, `null`, "{\n  \"score\": 0.5\n}")
	tests := []struct {
		name     string
		opts     OutputOptions
		outcomes []Outcome
		want     string
	}{
		{
			name:     "table of a VARIANT function",
			opts:     OutputOptions{Format: OutputTable, Function: "ECHO", Columns: []string{"$1"}, ReturnType: "VARIANT", BatchRows: 4096},
			outcomes: []Outcome{answered},
			want: `+-----+---------------+
| Row | ECHO($1)      |
|-----+---------------|
|   1 | "hello"       |
|   2 | "line\nbreak" |
|   3 | NULL          |
|   4 | {"score":0.5} |
+-----+---------------+
`,
		},
		{
			name:     "table of a VARCHAR function",
			opts:     OutputOptions{Format: OutputTable, Function: "ECHO", Columns: []string{"TEXT", "LANG"}, ReturnType: "VARCHAR(100)", BatchRows: 4096},
			outcomes: []Outcome{answered},
			want: `+-----+------------------+
| Row | ECHO(TEXT, LANG) |
|-----+------------------|
|   1 | hello            |
|   2 | line\nbreak      |
|   3 | NULL             |
|   4 | {"score":0.5}    |
+-----+------------------+
`,
		},
		{
			name:     "empty table",
			opts:     OutputOptions{Format: OutputTable, Function: "F", Columns: []string{"$1"}},
			outcomes: nil,
			want: `+-----+-------+
| Row | F($1) |
|-----+-------|
+-----+-------+
`,
		},
		{
			name: "table over several batches: sized on the first, later values cut",
			opts: OutputOptions{Format: OutputTable, Function: "F", Columns: []string{"$1"}, ReturnType: "TEXT", BatchRows: 2},
			outcomes: []Outcome{
				outcome(0, 0, []string{"a", "b"}, `"short"`, `"longest"`),
				outcome(1, 2, []string{"c"}, `"much longer than that"`),
			},
			want: `+---------+---------+
| Row     | F($1)   |
|---------+---------|
|       1 | short   |
|       2 | longest |
|       3 | much l… |
+---------+---------+
`,
		},
		{
			name:     "csv",
			opts:     OutputOptions{Format: OutputCSV, Function: "ECHO", Columns: []string{"text"}},
			outcomes: []Outcome{answered},
			want:     "text,ECHO(text)\nhello,hello\n\"line\nbreak\",\"line\nbreak\"\nn,\nobj,\"{\"\"score\"\":0.5}\"\n",
		},
		{
			name:     "json lines",
			opts:     OutputOptions{Format: OutputJSON, Function: "ECHO", Columns: []string{"text"}},
			outcomes: []Outcome{answered, outcome(1, 4, []string{"next"}, `"next"`)},
			want: `{"row":1,"input":["hello"],"value":"hello"}
{"row":2,"input":["line\nbreak"],"value":"line\nbreak"}
{"row":3,"input":["n"],"value":null}
{"row":4,"input":["obj"],"value":{"score":0.5}}
{"row":5,"input":["next"],"value":"next"}
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := render(t, tt.opts, tt.outcomes...)
			if got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestParseOutputFormat(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"table", "CSV", "json"} {
		if _, err := ParseOutputFormat(s); err != nil {
			t.Errorf("ParseOutputFormat(%q): %v", s, err)
		}
	}
	if _, err := ParseOutputFormat("xml"); err == nil {
		t.Error("ParseOutputFormat(xml) accepted")
	}
}
