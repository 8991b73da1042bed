package caller

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"testing"
)

// FuzzCheckAnswer checks the answer walker against encoding/json: any body it accepts
// must decode, with encoding/json, to the same rows and values, and any body it rejects
// must be one encoding/json cannot read as a valid answer.
func FuzzCheckAnswer(f *testing.F) {
	for _, body := range []string{
		`{"data":[[0,"a"],[1,"b"]]}`,
		` { "x" : "]" , "data" : [ [ 0 , {"k":"[\"]"} ] , [1, null] ] } `,
		`{"d\u0061ta":[[0,1],[1,[2,3]]]}`,
		`{"data":[[0,"a"],[1,"b"]],"data":[[0,"c"],[1,"d"]]}`,
		`{"data":[[0],[1,"b","c"]]}`,
		`{"data":[["0","a"],[1.0,"b"]]}`,
		`[[0,"a"]]`, `{"data":null}`, `{"data":[[0,"a"],`, `"str"`,
	} {
		f.Add([]byte(body), 2)
	}
	f.Fuzz(func(t *testing.T, body []byte, rows int) {
		if rows < 0 || rows > 1000 {
			return
		}
		values, ae := checkAnswer(http.Header{}, body, rows)
		// A map, as its keys match exactly, the last duplicate winning, like the walker's.
		var object map[string]json.RawMessage
		var reference struct{ Data []json.RawMessage }
		refErr := json.Unmarshal(body, &object)
		if refErr == nil {
			refErr = json.Unmarshal(object["data"], &reference.Data)
		}
		if ae != nil {
			if refErr == nil && reference.Data != nil && len(reference.Data) == rows && validRows(reference.Data) {
				t.Fatalf("rejected %q (%v), which encoding/json reads as a valid answer", body, ae)
			}
			return
		}
		if refErr != nil || len(reference.Data) != rows {
			t.Fatalf("accepted %q, which encoding/json reads as %d rows (%v)", body, len(reference.Data), refErr)
		}
		for i, raw := range reference.Data {
			var row []json.RawMessage
			if json.Unmarshal(raw, &row) != nil || len(row) != 2 || string(row[0]) != strconv.Itoa(i) {
				t.Fatalf("accepted row %d %s", i, raw)
			}
			if !bytes.Equal(row[1], values[i]) {
				t.Fatalf("row %d: value %s, encoding/json says %s", i, values[i], row[1])
			}
		}
	})
}

func validRows(data []json.RawMessage) bool {
	for i, raw := range data {
		var row []json.RawMessage
		if json.Unmarshal(raw, &row) != nil || len(row) != 2 || string(row[0]) != strconv.Itoa(i) {
			return false
		}
	}
	return true
}

func BenchmarkCheckAnswer(b *testing.B) {
	rows := SyntheticRows(4096)
	body := EncodeRows(rows)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, ae := checkAnswer(http.Header{}, body, len(rows)); ae != nil {
			b.Fatal(ae)
		}
	}
}

// TestCheckAnswer: the exported check gives the values of a valid answer, and for an
// invalid one an error of its class whose message says what is wrong.
func TestCheckAnswer(t *testing.T) {
	t.Parallel()
	values, err := CheckAnswer(nil, []byte(`{"data":[[0,"a"],[1,{"k":1}]]}`), 2)
	if err != nil || len(values) != 2 || string(values[0]) != `"a"` || string(values[1]) != `{"k":1}` {
		t.Fatalf("values %q, error %v", values, err)
	}
	_, err = CheckAnswer(nil, []byte(`{"data":[[0,"a"]]}`), 2)
	if !errors.Is(err, ErrRowCount) || err.Error() != "2 rows were sent, 1 came back" {
		t.Errorf("error %v, want ErrRowCount", err)
	}
}
