package caller

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/asyncfn/asyncfn/internal/wire"
)

// ArgType is the SQL type of a function argument. Snowflake sends each argument as its
// type's JSON: NUMBER and the other numeric types as a number, BOOLEAN as true or false,
// VARIANT, OBJECT and ARRAY as the JSON they hold, NULL as null, and text, dates, times,
// timestamps, binary and geography as a string. A text field (of CSV, TSV, lines or a
// command-line argument) is sent as its argument's type would be; an empty field is null,
// but for text types, where it is the empty string. The zero ArgType is text.
type ArgType struct {
	// SQL is the type as declared, upper-cased, e.g. NUMBER(38,0).
	SQL  string
	kind argKind
}

type argKind int

const (
	kindText argKind = iota
	kindNumber
	kindBoolean
	kindVariant
	kindObject
	kindArray
)

// argKinds maps the first word of each Snowflake data type to how it is sent.
var argKinds = map[string]argKind{
	"NUMBER": kindNumber, "DECIMAL": kindNumber, "DEC": kindNumber, "NUMERIC": kindNumber,
	"INT": kindNumber, "INTEGER": kindNumber, "BIGINT": kindNumber, "SMALLINT": kindNumber,
	"TINYINT": kindNumber, "BYTEINT": kindNumber, "FLOAT": kindNumber, "FLOAT4": kindNumber,
	"FLOAT8": kindNumber, "DOUBLE": kindNumber, "REAL": kindNumber,
	"BOOLEAN": kindBoolean,
	"VARIANT": kindVariant, "OBJECT": kindObject, "ARRAY": kindArray,
	"VARCHAR": kindText, "CHAR": kindText, "CHARACTER": kindText, "STRING": kindText,
	"TEXT": kindText, "NCHAR": kindText, "NVARCHAR": kindText, "NVARCHAR2": kindText,
	"BINARY": kindText, "VARBINARY": kindText, "DATE": kindText, "DATETIME": kindText,
	"TIME": kindText, "TIMESTAMP": kindText, "TIMESTAMP_LTZ": kindText,
	"TIMESTAMP_NTZ": kindText, "TIMESTAMP_TZ": kindText, "GEOGRAPHY": kindText,
	"GEOMETRY": kindText,
}

// ParseArgType reads a Snowflake data type such as NUMBER, number(38,0), VARCHAR(100) or
// DOUBLE PRECISION. An unknown type is an error, so that a typo is not sent as text.
func ParseArgType(s string) (ArgType, error) {
	sql := strings.ToUpper(strings.Join(strings.Fields(s), " "))
	base, _, _ := strings.Cut(sql, "(")
	base, _, _ = strings.Cut(strings.TrimSpace(base), " ")
	kind, ok := argKinds[base]
	if !ok {
		return ArgType{}, fmt.Errorf("%q is not a Snowflake data type such as NUMBER, FLOAT, BOOLEAN, VARCHAR, VARIANT, OBJECT, ARRAY, DATE or TIMESTAMP", strings.TrimSpace(s))
	}
	return ArgType{SQL: sql, kind: kind}, nil
}

// ParseArgTypes reads a comma-separated list of data types, e.g. NUMBER,NUMBER(10,2).
func ParseArgTypes(list string) ([]ArgType, error) {
	var types []ArgType
	for _, s := range splitTopLevel(list) {
		t, err := ParseArgType(s)
		if err != nil {
			return nil, err
		}
		types = append(types, t)
	}
	return types, nil
}

// ParseSignature reads the types out of a function signature as Snowflake writes it in
// sf-external-function-signature, e.g. (A NUMBER, B NUMBER); names may be "quoted".
func ParseSignature(sig string) ([]ArgType, error) {
	inner, opened := strings.CutPrefix(strings.TrimSpace(sig), "(")
	inner, closed := strings.CutSuffix(inner, ")")
	if !opened || !closed {
		return nil, fmt.Errorf("signature %q: write it as Snowflake does, e.g. (A NUMBER, B VARCHAR)", sig)
	}
	types := []ArgType{} // not nil: "()" declares no arguments
	if strings.TrimSpace(inner) == "" {
		return types, nil
	}
	for _, arg := range splitTopLevel(inner) {
		var name, typ string
		if rest, quoted := strings.CutPrefix(arg, `"`); quoted {
			end := strings.Index(rest, `"`)
			if end < 0 {
				return nil, fmt.Errorf("signature %q: a quoted name is not closed", sig)
			}
			name, typ = rest[:end], rest[end+1:]
		} else {
			name, typ, _ = strings.Cut(arg, " ")
		}
		if strings.TrimSpace(typ) == "" {
			return nil, fmt.Errorf("signature %q: argument %s has no type", sig, name)
		}
		t, err := ParseArgType(typ)
		if err != nil {
			return nil, fmt.Errorf("signature %q: argument %s: %w", sig, name, err)
		}
		types = append(types, t)
	}
	return types, nil
}

// splitTopLevel splits s at the commas outside parentheses and quotes, so that
// NUMBER(38,0) stays whole, and trims each part.
func splitTopLevel(s string) []string {
	var parts []string
	depth, quoted, start := 0, false, 0
	for i, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
		case quoted:
		case r == '(':
			depth++
		case r == ')':
			depth--
		case r == ',' && depth == 0:
			parts = append(parts, strings.TrimSpace(s[start:i]))
			start = i + 1
		}
	}
	return append(parts, strings.TrimSpace(s[start:]))
}

// Value returns field as Snowflake would send a value of type t, or an error saying why
// field is not one.
func (t ArgType) Value(field string) (json.RawMessage, error) {
	return t.appendValue(nil, field)
}

func (t ArgType) appendValue(b []byte, field string) ([]byte, error) {
	if t.kind == kindText {
		return appendJSONString(b, field), nil
	}
	s := strings.TrimSpace(field)
	if s == "" {
		return append(b, "null"...), nil
	}
	switch t.kind {
	case kindNumber:
		if n, ok := appendNumber(b, s); ok {
			return n, nil
		}
		return nil, fmt.Errorf("%q is not a number (%s)", field, t.SQL)
	case kindBoolean:
		switch strings.ToLower(s) {
		case "true", "t", "yes", "y", "on", "1":
			return append(b, "true"...), nil
		case "false", "f", "no", "n", "off", "0":
			return append(b, "false"...), nil
		}
		return nil, fmt.Errorf("%q is not a BOOLEAN: use true or false (or t, yes, y, on, 1; f, no, n, off, 0)", field)
	}
	switch {
	case !wire.Valid([]byte(s)):
		return nil, fmt.Errorf("%q is not JSON, as a %s value must be", field, t.SQL)
	case t.kind == kindObject && s[0] != '{':
		return nil, fmt.Errorf("%q is not a JSON object, as an OBJECT value must be", field)
	case t.kind == kindArray && s[0] != '[':
		return nil, fmt.Errorf("%q is not a JSON array, as an ARRAY value must be", field)
	}
	return append(b, s...), nil
}

// appendNumber appends s, a decimal number as SQL reads it (+1, 007, .5, 1., 2E3), as a
// JSON number with every digit kept; it reports false when s is not one.
func appendNumber(b []byte, s string) ([]byte, bool) {
	i := 0
	next := func(set string) bool {
		if i < len(s) && strings.IndexByte(set, s[i]) >= 0 {
			i++
			return true
		}
		return false
	}
	digits := func() string {
		start := i
		for next("0123456789") {
		}
		return s[start:i]
	}
	negative := s[0] == '-'
	next("+-")
	whole := digits()
	var fraction string
	if next(".") {
		fraction = digits()
	}
	if whole == "" && fraction == "" {
		return nil, false
	}
	var exponent string
	if next("eE") {
		start := i
		next("+-")
		if digits() == "" {
			return nil, false
		}
		exponent = "e" + s[start:i]
	}
	if i != len(s) {
		return nil, false
	}
	if negative {
		b = append(b, '-')
	}
	if whole = strings.TrimLeft(whole, "0"); whole == "" {
		whole = "0"
	}
	b = append(b, whole...)
	if fraction != "" {
		b = append(b, '.')
		b = append(b, fraction...)
	}
	return append(b, exponent...), true
}
