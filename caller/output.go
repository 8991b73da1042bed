package caller

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// OutputFormat is how results are written.
type OutputFormat string

const (
	// OutputTable is a box like SnowSQL's, with a Row column and the function's column.
	OutputTable OutputFormat = "table"
	// OutputCSV has the input columns then the function's value, with a header row.
	OutputCSV OutputFormat = "csv"
	// OutputJSON is JSON lines: {"row":1,"input":[...],"value":...}.
	OutputJSON OutputFormat = "json"
)

// ParseOutputFormat checks an output format name.
func ParseOutputFormat(s string) (OutputFormat, error) {
	switch f := OutputFormat(strings.ToLower(s)); f {
	case OutputTable, OutputCSV, OutputJSON:
		return f, nil
	}
	return "", fmt.Errorf("output format %q: use table, csv or json", s)
}

// OutputOptions describe the results to write.
type OutputOptions struct {
	Format OutputFormat
	// Function and Columns make the value's column name, as Snowflake names an
	// expression's column: ECHO($1).
	Function string
	Columns  []string
	// ReturnType decides how the table shows strings: bare for text types (VARCHAR and
	// its synonyms), quoted JSON otherwise (VARIANT), as Snowflake shows them.
	ReturnType string
	// BatchRows is the rows of a full batch. A table is sized on the first batch, since
	// output streams; when that batch is not full it is the only one and fits exactly.
	BatchRows int
}

// OutputWriter writes outcomes in the order given.
type OutputWriter interface {
	Write(Outcome) error
	// Close ends the output (the table's bottom line) and flushes it.
	Close() error
}

// NewOutputWriter returns a writer of results to w.
func NewOutputWriter(w io.Writer, opts OutputOptions) (OutputWriter, error) {
	header := opts.Function + "(" + strings.Join(opts.Columns, ", ") + ")"
	bw := bufio.NewWriterSize(w, 64<<10)
	switch opts.Format {
	case OutputTable, "":
		return &tableWriter{w: bw, header: header, text: isTextType(opts.ReturnType), batchRows: opts.BatchRows}, nil
	case OutputCSV:
		c := &csvWriter{w: bw, out: csv.NewWriter(bw)}
		return c, c.out.Write(append(append([]string(nil), opts.Columns...), header))
	case OutputJSON:
		return &jsonWriter{w: bw}, nil
	}
	return nil, fmt.Errorf("output format %q: use table, csv or json", opts.Format)
}

func isTextType(t string) bool {
	t = strings.ToUpper(strings.TrimSpace(t))
	if i := strings.IndexByte(t, '('); i >= 0 {
		t = strings.TrimSpace(t[:i])
	}
	switch t {
	case "VARCHAR", "STRING", "TEXT", "CHAR", "CHARACTER", "NCHAR", "NVARCHAR", "NVARCHAR2", "CHAR VARYING", "NCHAR VARYING":
		return true
	}
	return false
}

type tableWriter struct {
	w                    *bufio.Writer
	header               string
	text                 bool
	batchRows            int
	started              bool
	rowWidth, valueWidth int
	border               string
}

func (t *tableWriter) Write(o Outcome) error {
	cells := make([]string, len(o.Rows))
	for i, v := range o.Answer.Values {
		cells[i] = t.show(v)
	}
	if !t.started {
		t.start(o, cells)
	}
	for i, cell := range cells {
		if utf8.RuneCountInString(cell) > t.valueWidth {
			cell = string([]rune(cell)[:t.valueWidth-1]) + "…"
		}
		fmt.Fprintf(t.w, "| %*d | %s |\n", t.rowWidth, o.FirstRow+i+1, pad(cell, t.valueWidth))
	}
	return nil
}

// start sizes the table on the first batch and writes its head. When more batches may
// follow, the Row column leaves room for millions of rows, and later values wider than
// the first batch's are cut.
func (t *tableWriter) start(o Outcome, cells []string) {
	t.started = true
	t.rowWidth = max(len("Row"), len(strconv.Itoa(o.FirstRow+len(o.Rows))))
	if len(o.Rows) >= t.batchRows && t.batchRows > 0 {
		t.rowWidth = max(t.rowWidth, 7)
	}
	t.valueWidth = max(utf8.RuneCountInString(t.header), 4)
	for _, cell := range cells {
		t.valueWidth = max(t.valueWidth, utf8.RuneCountInString(cell))
	}
	line := func(edge, cross string) string {
		return edge + strings.Repeat("-", t.rowWidth+2) + cross + strings.Repeat("-", t.valueWidth+2) + edge + "\n"
	}
	t.border = line("+", "+")
	t.w.WriteString(t.border)
	fmt.Fprintf(t.w, "| %s | %s |\n", pad("Row", t.rowWidth), pad(t.header, t.valueWidth))
	t.w.WriteString(line("|", "+"))
}

func (t *tableWriter) Close() error {
	if !t.started {
		t.start(Outcome{}, nil)
	}
	t.w.WriteString(t.border)
	return t.w.Flush()
}

// show renders a value as Snowflake's worksheet does: NULL, bare text for text types,
// compact JSON otherwise; control characters escaped to keep the box on one line each.
func (t *tableWriter) show(v json.RawMessage) string {
	s := ""
	switch {
	case bytes.Equal(v, []byte("null")):
		return "NULL"
	case t.text && len(v) > 0 && v[0] == '"':
		if json.Unmarshal(v, &s) != nil {
			s = string(v)
		}
	default:
		s = compact(v)
	}
	return controlEscaper.Replace(s)
}

var controlEscaper = strings.NewReplacer("\n", `\n`, "\r", `\r`, "\t", `\t`)

func pad(s string, width int) string {
	if n := utf8.RuneCountInString(s); n < width {
		return s + strings.Repeat(" ", width-n)
	}
	return s
}

func compact(v json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, v) != nil {
		return string(v)
	}
	return b.String()
}

type csvWriter struct {
	w      *bufio.Writer
	out    *csv.Writer
	record []string
}

// Write writes the input columns and the value: strings bare, NULL empty, other JSON as
// compact JSON text.
func (c *csvWriter) Write(o Outcome) error {
	for i, row := range o.Rows {
		c.record = c.record[:0]
		for _, arg := range row {
			c.record = append(c.record, cell(arg))
		}
		c.record = append(c.record, cell(o.Answer.Values[i]))
		if err := c.out.Write(c.record); err != nil {
			return err
		}
	}
	return nil
}

func cell(v json.RawMessage) string {
	switch {
	case bytes.Equal(v, []byte("null")):
		return ""
	case len(v) > 0 && v[0] == '"':
		var s string
		if json.Unmarshal(v, &s) == nil {
			return s
		}
	}
	return compact(v)
}

func (c *csvWriter) Close() error {
	c.out.Flush()
	if err := c.out.Error(); err != nil {
		return err
	}
	return c.w.Flush()
}

type jsonWriter struct {
	w   *bufio.Writer
	buf bytes.Buffer
}

// Write writes one line per row: its 1-based number in the input, its arguments and the
// function's value, compacted so that each stays on its line.
func (j *jsonWriter) Write(o Outcome) error {
	for i, row := range o.Rows {
		j.buf.Reset()
		j.buf.WriteString(`{"row":`)
		j.buf.WriteString(strconv.Itoa(o.FirstRow + i + 1))
		j.buf.WriteString(`,"input":[`)
		for k, arg := range row {
			if k > 0 {
				j.buf.WriteByte(',')
			}
			if err := json.Compact(&j.buf, arg); err != nil {
				return err
			}
		}
		j.buf.WriteString(`],"value":`)
		if err := json.Compact(&j.buf, o.Answer.Values[i]); err != nil {
			return err
		}
		j.buf.WriteString("}\n")
		if _, err := j.w.Write(j.buf.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

func (j *jsonWriter) Close() error { return j.w.Flush() }
