package caller

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/asyncfn/asyncfn/internal/wire"
)

// Format is an input file's format.
type Format string

const (
	// FormatLines is one row per line, the line as the only argument, sent as its type
	// in InputOptions.Types, a string by default.
	FormatLines Format = "lines"
	// FormatCSV and FormatTSV have a header row naming the columns unless told otherwise;
	// each field is sent as its column's type in InputOptions.Types, a string by default.
	FormatCSV Format = "csv"
	FormatTSV Format = "tsv"
	// FormatJSONL is one JSON value per line: an object (columns by key), an array
	// (columns by position) or a scalar (one column); values are sent as they are written,
	// so numbers keep their precision and objects stay objects. A key or position that a
	// line lacks is sent as null, as Snowflake sends NULL; a key chosen by name must be
	// in at least one line of the first batch, or it is taken for a typo.
	FormatJSONL Format = "jsonl"
)

// ParseFormat checks a format name.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(s)); f {
	case FormatLines, FormatCSV, FormatTSV, FormatJSONL:
		return f, nil
	}
	return "", fmt.Errorf("input format %q: use lines, csv, tsv or jsonl", s)
}

// FormatOf is the format a file name's extension implies: .csv, .tsv or .tab,
// .jsonl, .ndjson or .json, and lines for anything else.
func FormatOf(name string) Format {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".csv":
		return FormatCSV
	case ".tsv", ".tab":
		return FormatTSV
	case ".jsonl", ".ndjson", ".json":
		return FormatJSONL
	}
	return FormatLines
}

// InputOptions says how to read rows from a file.
type InputOptions struct {
	Format Format
	// Columns chooses the arguments, in order: names (from the header row or the JSON
	// keys) or 1-based positions. Empty means every column.
	Columns []string
	// NoHeaderRow says a CSV or TSV file's first line is data.
	NoHeaderRow bool
	// BatchRows is the rows of the first batch, among which JSON lines must have each key
	// named in Columns; default DefaultMaxBatchRows.
	BatchRows int
	// Types are the SQL types of the arguments, one per chosen column: each field of
	// lines, CSV and TSV is sent as its type's JSON (see ArgType), and one that is not of
	// its type is an error naming its line and column. JSON lines are sent as written.
	// None sends every field as a string.
	Types []ArgType
}

// RowReader reads input rows one at a time, so the input is never held whole.
type RowReader interface {
	// Columns names the arguments of each row: header names, JSON keys, or $1, $2, ...
	// for positions, as Snowflake names unnamed columns.
	Columns() []string
	// Read returns the next row, or io.EOF after the last one.
	Read() (Row, error)
}

// ArgsReader reads one row of one argument of type t per string, e.g. command-line
// arguments.
func ArgsReader(args []string, t ArgType) RowReader { return &argsReader{args: args, typ: t} }

type argsReader struct {
	args []string
	typ  ArgType
	n    int
}

func (r *argsReader) Columns() []string { return []string{"$1"} }

func (r *argsReader) Read() (Row, error) {
	if len(r.args) == 0 {
		return nil, io.EOF
	}
	r.n++
	v, err := r.typ.Value(r.args[0])
	if err != nil {
		return nil, fmt.Errorf("argument %d: %w", r.n, err)
	}
	r.args = r.args[1:]
	return Row{v}, nil
}

// NewReader returns a reader of rows from r in the given format. It reads the header row
// of CSV and TSV, and the first line of JSON lines, at once, so Columns is known.
func NewReader(r io.Reader, opts InputOptions) (RowReader, error) {
	var rows RowReader
	var err error
	switch opts.Format {
	case FormatLines, "":
		if _, err := columnIndexes(opts.Columns, []string{"$1"}); err != nil {
			return nil, err
		}
		lines := &linesReader{in: bufio.NewReaderSize(r, 64<<10)}
		if len(opts.Types) > 0 {
			lines.typ = opts.Types[0]
		}
		rows = lines
	case FormatCSV, FormatTSV:
		rows, err = newCSVReader(r, opts)
	case FormatJSONL:
		rows, err = newJSONLReader(r, opts)
	default:
		return nil, fmt.Errorf("input format %q: use lines, csv, tsv or jsonl", opts.Format)
	}
	if err != nil {
		return nil, err
	}
	if columns := rows.Columns(); opts.Types != nil && len(opts.Types) != len(columns) {
		return nil, fmt.Errorf("%d argument types for the %d columns %s: choose one column per argument", len(opts.Types), len(columns), strings.Join(columns, ", "))
	}
	return rows, nil
}

type linesReader struct {
	in   *bufio.Reader
	typ  ArgType
	line int
}

func (r *linesReader) Columns() []string { return []string{"$1"} }

func (r *linesReader) Read() (Row, error) {
	b, err := readLine(r.in)
	if err != nil {
		return nil, err
	}
	r.line++
	v, err := r.typ.appendValue(make([]byte, 0, len(b)+2), string(b))
	if err != nil {
		return nil, fmt.Errorf("line %d: %w", r.line, err)
	}
	return Row{v}, nil
}

// readLine returns the next line without its \n or \r\n; the returned slice is valid
// until the next call. A last line without a newline counts; an empty end does not.
func readLine(in *bufio.Reader) ([]byte, error) {
	b, err := in.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		long := append([]byte(nil), b...)
		for err == bufio.ErrBufferFull {
			b, err = in.ReadSlice('\n')
			long = append(long, b...)
		}
		b = long
	}
	if err == io.EOF && len(b) > 0 {
		err = nil
	}
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r")), nil
}

type csvReader struct {
	in      *csv.Reader
	columns []string
	picks   []int
	types   []ArgType // of the picks; none for text
	first   []string  // a data record read to learn the column count, when there is no header
}

func newCSVReader(r io.Reader, opts InputOptions) (*csvReader, error) {
	in := csv.NewReader(bufio.NewReaderSize(r, 64<<10))
	in.ReuseRecord = true
	if opts.Format == FormatTSV {
		in.Comma = '\t'
		in.LazyQuotes = true
	}
	record, err := in.Read()
	if err == io.EOF {
		return nil, fmt.Errorf("the %s input is empty", opts.Format)
	}
	if err != nil {
		return nil, err
	}
	record = append([]string(nil), record...)
	record[0] = strings.TrimPrefix(record[0], "\ufeff") // a byte-order mark some tools write
	c := &csvReader{in: in}
	names := record
	if opts.NoHeaderRow {
		names = positionNames(len(record))
		c.first = record
	}
	if c.picks, err = columnIndexes(opts.Columns, names); err != nil {
		return nil, err
	}
	c.columns = make([]string, len(c.picks))
	for i, p := range c.picks {
		c.columns[i] = names[p]
	}
	if len(opts.Types) == len(c.picks) { // else NewReader fails
		c.types = opts.Types
	}
	return c, nil
}

func (c *csvReader) Columns() []string { return c.columns }

func (c *csvReader) Read() (Row, error) {
	var record []string
	var err error
	if c.first != nil {
		record, c.first = c.first, nil
	} else if record, err = c.in.Read(); err != nil {
		return nil, err
	}
	return c.row(record)
}

func (c *csvReader) row(record []string) (Row, error) {
	size := 0
	for _, p := range c.picks {
		size += len(record[p]) + 2
	}
	buf := make([]byte, 0, size)
	row := make(Row, len(c.picks))
	for i, p := range c.picks {
		start := len(buf)
		if c.types == nil {
			buf = appendJSONString(buf, record[p])
		} else {
			var err error
			if buf, err = c.types[i].appendValue(buf, record[p]); err != nil {
				line, _ := c.in.FieldPos(p)
				return nil, fmt.Errorf("line %d, column %q: %w", line, c.columns[i], err)
			}
		}
		row[i] = buf[start:len(buf):len(buf)]
	}
	return row, nil
}

// columnIndexes turns column choices (names or 1-based positions) into 0-based indexes
// into names; none means all.
func columnIndexes(choices, names []string) ([]int, error) {
	if len(choices) == 0 {
		picks := make([]int, len(names))
		for i := range picks {
			picks[i] = i
		}
		return picks, nil
	}
	picks := make([]int, len(choices))
	for i, choice := range choices {
		p, err := columnIndex(strings.TrimSpace(choice), names)
		if err != nil {
			return nil, err
		}
		picks[i] = p
	}
	return picks, nil
}

func columnIndex(choice string, names []string) (int, error) {
	if n, err := strconv.Atoi(strings.TrimPrefix(choice, "$")); err == nil {
		if n < 1 || n > len(names) {
			return 0, fmt.Errorf("column %s: the input has columns 1 to %d", choice, len(names))
		}
		return n - 1, nil
	}
	for i, name := range names {
		if name == choice {
			return i, nil
		}
	}
	for i, name := range names {
		if strings.EqualFold(name, choice) {
			return i, nil
		}
	}
	return 0, fmt.Errorf("column %q: the input's columns are %s", choice, strings.Join(names, ", "))
}

type jsonlReader struct {
	in      *bufio.Reader
	line    int
	shape   byte // of the first line: '{' object, '[' array, else a scalar
	columns []string
	picks   []int // for arrays: the positions chosen
	ahead   []Row // rows read to learn the columns, returned first
	err     error // what ended the reading ahead, returned after them
}

func newJSONLReader(r io.Reader, opts InputOptions) (*jsonlReader, error) {
	j := &jsonlReader{in: bufio.NewReaderSize(r, 64<<10)}
	line, err := j.nextLine()
	if err == io.EOF {
		return nil, errors.New("the jsonl input is empty")
	}
	if err != nil {
		return nil, err
	}
	j.shape = line[0]
	switch j.shape {
	case '{':
		keys, err := objectKeys(line)
		if err != nil {
			return nil, j.lineError(err)
		}
		var unseen []int
		if j.columns, unseen, err = memberNames(opts.Columns, keys); err != nil {
			return nil, err
		}
		if len(unseen) > 0 {
			return j, j.findKeys(line, unseen, orDefault(opts.BatchRows, DefaultMaxBatchRows))
		}
	case '[':
		var values []json.RawMessage
		if err := json.Unmarshal(line, &values); err != nil {
			return nil, j.lineError(err)
		}
		names := positionNames(len(values))
		if j.picks, err = columnIndexes(opts.Columns, names); err != nil {
			return nil, err
		}
		for _, p := range j.picks {
			j.columns = append(j.columns, names[p])
		}
	default:
		if _, err := columnIndexes(opts.Columns, []string{"$1"}); err != nil {
			return nil, err
		}
		j.columns = []string{"$1"}
	}
	row, err := j.row(line)
	if err != nil {
		return nil, err
	}
	j.ahead = []Row{row}
	return j, nil
}

// memberNames resolves column choices against the first object's keys: a position or a
// key (in any case) names that key; another name is kept, since later objects may have
// it, and its index returned among unseen.
func memberNames(choices, keys []string) (names []string, unseen []int, err error) {
	if len(choices) == 0 {
		return keys, nil, nil
	}
	names = make([]string, len(choices))
	for i, choice := range choices {
		choice = strings.TrimSpace(choice)
		p, err := columnIndex(choice, keys)
		switch {
		case err == nil:
			names[i] = keys[p]
		case isPosition(choice):
			return nil, nil, err
		default:
			names[i] = choice
			unseen = append(unseen, i)
		}
	}
	return names, unseen, nil
}

// findKeys reads ahead, up to the first batch's lines, until each column in unseen is a
// key of some line, and keeps the rows it read for Read. A column no line of the first
// batch has is an error, as an unknown CSV column is: it is likelier a typo than a key
// that comes later, and would otherwise send NULL for every row without a word.
func (j *jsonlReader) findKeys(line []byte, unseen []int, batchRows int) error {
	var keys []string // of every line read, in order, for the error
	known := map[string]bool{}
	for {
		// A line that is not an object fails in j.row, with the line's number.
		if lineKeys, err := lineObjectKeys(line); err == nil {
			for _, k := range lineKeys {
				if !known[k] {
					known[k] = true
					keys = append(keys, k)
				}
			}
			// Resolved before the line's row is made, so that the row has the value;
			// the rows before had no such key in any case.
			unseen = slices.DeleteFunc(unseen, func(i int) bool {
				p, err := columnIndex(j.columns[i], lineKeys)
				if err == nil {
					j.columns[i] = lineKeys[p]
				}
				return err == nil
			})
		}
		row, err := j.row(line)
		if err != nil {
			j.err = err
			break
		}
		j.ahead = append(j.ahead, row)
		if len(unseen) == 0 || len(j.ahead) == batchRows {
			break
		}
		if line, err = j.nextLine(); err != nil {
			if err != io.EOF {
				j.err = err
			}
			break
		}
	}
	if len(unseen) > 0 {
		if j.err != nil {
			return j.err
		}
		return fmt.Errorf("column %q: the input's columns are %s", j.columns[unseen[0]], strings.Join(keys, ", "))
	}
	return nil
}

func isPosition(choice string) bool {
	_, err := strconv.Atoi(strings.TrimPrefix(choice, "$"))
	return err == nil
}

func positionNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = "$" + strconv.Itoa(i+1)
	}
	return names
}

func (j *jsonlReader) Columns() []string { return j.columns }

func (j *jsonlReader) Read() (Row, error) {
	if len(j.ahead) > 0 {
		row := j.ahead[0]
		j.ahead = j.ahead[1:]
		return row, nil
	}
	if j.err != nil {
		err := j.err
		j.err = nil
		return nil, err
	}
	line, err := j.nextLine()
	if err != nil {
		return nil, err
	}
	return j.row(line)
}

// nextLine skips blank lines, which JSON-lines writers often leave at the end.
func (j *jsonlReader) nextLine() ([]byte, error) {
	for {
		line, err := readLine(j.in)
		if err != nil {
			return nil, err
		}
		j.line++
		if line = bytes.TrimSpace(line); len(line) > 0 {
			return line, nil
		}
	}
}

func (j *jsonlReader) lineError(err error) error {
	return fmt.Errorf("line %d: %s", j.line, strings.TrimPrefix(err.Error(), "json: "))
}

// row picks the columns out of one line, shaped as the first. Values are copied out of
// the line, which the reader reuses. A missing member or element is NULL, as in Snowflake.
func (j *jsonlReader) row(line []byte) (Row, error) {
	null := json.RawMessage("null")
	switch j.shape {
	case '{':
		var object map[string]json.RawMessage
		if err := json.Unmarshal(line, &object); err != nil {
			return nil, j.lineError(fmt.Errorf("%v (the first line is an object, so every line must be)", err))
		}
		row := make(Row, len(j.columns))
		for i, name := range j.columns {
			if v, ok := object[name]; ok {
				row[i] = v
			} else {
				row[i] = null
			}
		}
		return row, nil
	case '[':
		var values []json.RawMessage
		if err := json.Unmarshal(line, &values); err != nil {
			return nil, j.lineError(fmt.Errorf("%v (the first line is an array, so every line must be)", err))
		}
		row := make(Row, len(j.picks))
		for i, p := range j.picks {
			if p < len(values) {
				row[i] = values[p]
			} else {
				row[i] = null
			}
		}
		return row, nil
	default:
		if !wire.Valid(line) {
			return nil, j.lineError(errors.New("not a JSON value"))
		}
		return Row{append(json.RawMessage(nil), line...)}, nil
	}
}

// lineObjectKeys is objectKeys for a line that may not be an object.
func lineObjectKeys(line []byte) ([]string, error) {
	if line[0] != '{' {
		return nil, errors.New("not an object")
	}
	return objectKeys(line)
}

// objectKeys returns the keys of a JSON object in the order they are written, which a
// map would lose.
func objectKeys(object []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(object))
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	var keys []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, t.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return keys, nil
}
