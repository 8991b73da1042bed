package caller

import (
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestParseSignature(t *testing.T) {
	t.Parallel()
	for sig, want := range map[string]string{
		"(A NUMBER, B NUMBER)": "NUMBER,NUMBER",
		"()":                   "",
		` ( "my col" varchar(100) , n number(38,0), d double precision )`: "VARCHAR(100),NUMBER(38,0),DOUBLE PRECISION",
		"(V VARIANT,O OBJECT,A ARRAY,B BOOLEAN,T TIMESTAMP_NTZ(9))":       "VARIANT,OBJECT,ARRAY,BOOLEAN,TIMESTAMP_NTZ(9)",
	} {
		types, err := ParseSignature(sig)
		if err != nil {
			t.Errorf("ParseSignature(%q): %v", sig, err)
			continue
		}
		var got []string
		for _, typ := range types {
			got = append(got, typ.SQL)
		}
		if strings.Join(got, ",") != want {
			t.Errorf("ParseSignature(%q) = %q, want %s", sig, got, want)
		}
	}
	for sig, want := range map[string]string{
		"A NUMBER":      "write it as Snowflake does, e.g. (A NUMBER, B VARCHAR)",
		"A NUMBER)":     "write it as Snowflake does",
		"(A NUMBER, B)": "argument B has no type",
		"(A NUMBR)":     `argument A: "NUMBR" is not a Snowflake data type`,
		`("A NUMBER)`:   "a quoted name is not closed",
	} {
		if _, err := ParseSignature(sig); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSignature(%q) error %v, want one containing %q", sig, err, want)
		}
	}
	if types, err := ParseArgTypes("number, Number(10,2),varchar"); err != nil || len(types) != 3 || types[1].SQL != "NUMBER(10,2)" {
		t.Errorf("ParseArgTypes = %v, %v", types, err)
	}
}

// TestArgTypeValue checks each field as Snowflake would send a value of its type.
func TestArgTypeValue(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ typ, field, want string }{
		{"NUMBER", "1", "1"},
		{"NUMBER", " -12.50 ", "-12.50"},
		{"NUMBER", "+1", "1"},
		{"NUMBER", "007", "7"},
		{"NUMBER", ".5", "0.5"},
		{"NUMBER", "1.", "1"},
		{"NUMBER", "0", "0"},
		{"FLOAT", "-2.5E-3", "-2.5e-3"},
		{"NUMBER", "123456789012345678901234567890.123", "123456789012345678901234567890.123"},
		{"NUMBER", "", "null"},
		{"BOOLEAN", "TRUE", "true"},
		{"BOOLEAN", "n", "false"},
		{"BOOLEAN", " ", "null"},
		{"VARIANT", `{"a":[1,2]}`, `{"a":[1,2]}`},
		{"VARIANT", `"s"`, `"s"`},
		{"OBJECT", ` {} `, `{}`},
		{"ARRAY", `[1,"x"]`, `[1,"x"]`},
		{"VARCHAR", "", `""`},
		{"VARCHAR", " 1 ", `" 1 "`},
		{"DATE", "2026-11-30", `"2026-11-30"`},
	} {
		typ, err := ParseArgType(tt.typ)
		if err != nil {
			t.Fatal(err)
		}
		got, err := typ.Value(tt.field)
		if err != nil || string(got) != tt.want {
			t.Errorf("%s %q = %s, %v; want %s", tt.typ, tt.field, got, err, tt.want)
		}
	}
	for _, tt := range []struct{ typ, field, want string }{
		{"NUMBER", "abc", `"abc" is not a number (NUMBER)`},
		{"NUMBER", "1,5", `"1,5" is not a number (NUMBER)`},
		{"NUMBER", "-", `"-" is not a number`},
		{"NUMBER", ".", `"." is not a number`},
		{"NUMBER", "1e", `"1e" is not a number`},
		{"INT", "NaN", `"NaN" is not a number (INT)`},
		{"BOOLEAN", "maybe", `"maybe" is not a BOOLEAN`},
		{"VARIANT", "hello", `"hello" is not JSON, as a VARIANT value must be`},
		{"OBJECT", "[1]", `"[1]" is not a JSON object`},
		{"ARRAY", "{}", `"{}" is not a JSON array`},
	} {
		typ, _ := ParseArgType(tt.typ)
		if _, err := typ.Value(tt.field); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s %q: error %v, want one containing %q", tt.typ, tt.field, err, tt.want)
		}
	}
}

// TestTypedReaders checks that lines, CSV and arguments are sent by type, and that a
// field not of its type fails naming its line and column.
func TestTypedReaders(t *testing.T) {
	t.Parallel()
	types, _ := ParseSignature("(A NUMBER, B BOOLEAN)")
	r, err := NewReader(strings.NewReader("a,b,c\n1,true,x\n2.5,,y\n"), InputOptions{Format: FormatCSV, Columns: []string{"a", "b"}, Types: types})
	if err != nil {
		t.Fatal(err)
	}
	if _, rows := readAll(t, r); strings.Join(rows, "\n") != "1 | true\n2.5 | null" {
		t.Errorf("csv rows %q", rows)
	}
	number, _ := ParseArgType("NUMBER")
	r, err = NewReader(strings.NewReader("1\n\n3\n"), InputOptions{Format: FormatLines, Types: []ArgType{number}})
	if err != nil {
		t.Fatal(err)
	}
	if _, rows := readAll(t, r); strings.Join(rows, "\n") != "1\nnull\n3" {
		t.Errorf("lines rows %q", rows)
	}
	if _, rows := readAll(t, ArgsReader([]string{"4", "5"}, number)); strings.Join(rows, "\n") != "4\n5" {
		t.Errorf("argument rows %q", rows)
	}

	for _, tt := range []struct {
		name string
		r    func() (RowReader, error)
		want string
	}{
		{"csv", func() (RowReader, error) {
			return NewReader(strings.NewReader("a,b\n1,true\n2,x\n"), InputOptions{Format: FormatCSV, Types: types})
		}, `line 3, column "b": "x" is not a BOOLEAN`},
		{"tsv without header", func() (RowReader, error) {
			return NewReader(strings.NewReader("one\tfalse\n"), InputOptions{Format: FormatTSV, NoHeaderRow: true, Types: types})
		}, `line 1, column "$1": "one" is not a number (NUMBER)`},
		{"lines", func() (RowReader, error) {
			return NewReader(strings.NewReader("1\nten\n"), InputOptions{Format: FormatLines, Types: []ArgType{number}})
		}, `line 2: "ten" is not a number (NUMBER)`},
		{"arguments", func() (RowReader, error) { return ArgsReader([]string{"1", "two"}, number), nil }, `argument 2: "two" is not a number (NUMBER)`},
		{"count", func() (RowReader, error) {
			return NewReader(strings.NewReader("a,b,c\n1,2,3\n"), InputOptions{Format: FormatCSV, Types: types})
		}, "2 argument types for the 3 columns a, b, c: choose one column per argument"},
		{"jsonl count", func() (RowReader, error) {
			return NewReader(strings.NewReader(`{"a":1}`+"\n"), InputOptions{Format: FormatJSONL, Types: types})
		}, "2 argument types for the 1 columns a"},
	} {
		r, err := tt.r()
		for err == nil {
			_, err = r.Read()
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

// BenchmarkCSVReader reads a CSV of a text and two numeric columns, sent as text and by
// type, to show what the conversion costs.
func BenchmarkCSVReader(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("text,n,x\n")
	for i := range 10000 {
		fmt.Fprintf(&sb, "review number %d is fine,%d,%d.25\n", i, i, i)
	}
	input := sb.String()
	types, err := ParseArgTypes("VARCHAR,NUMBER,FLOAT")
	if err != nil {
		b.Fatal(err)
	}
	for name, types := range map[string][]ArgType{"text": nil, "typed": types} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(input)))
			for b.Loop() {
				r, err := NewReader(strings.NewReader(input), InputOptions{Format: FormatCSV, Types: types})
				if err != nil {
					b.Fatal(err)
				}
				for {
					if _, err := r.Read(); err == io.EOF {
						break
					} else if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
