package sentiment

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// row is one line of the test vectors (see testdata/README.md).
type row struct {
	id        string
	humanMean float64
	text      string
	ref       Scores
}

func loadRows(tb testing.TB, name string) []row {
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	rows := make([]row, 0, len(lines)-1)
	for n, line := range lines[1:] {
		f := strings.Split(line, "\t")
		if len(f) != 7 {
			tb.Fatalf("%s:%d: %d fields, want 7", name, n+2, len(f))
		}
		var v [5]float64
		for i, s := range append([]string{f[1]}, f[3:]...) {
			if v[i], err = strconv.ParseFloat(s, 64); err != nil {
				tb.Fatalf("%s:%d: %v", name, n+2, err)
			}
		}
		rows = append(rows, row{id: f[0], humanMean: v[0], text: f[2],
			ref: Scores{Compound: v[1], Pos: v[2], Neu: v[3], Neg: v[4]}})
	}
	return rows
}

func pearson(x, y []float64) float64 {
	var mx, my float64
	for i := range x {
		mx += x[i]
		my += y[i]
	}
	mx /= float64(len(x))
	my /= float64(len(y))
	var sxy, sxx, syy float64
	for i := range x {
		dx, dy := x[i]-mx, y[i]-my
		sxy += dx * dy
		sxx += dx * dx
		syy += dy * dy
	}
	return sxy / math.Sqrt(sxx*syy)
}

// class3 is the 3-class label used by the test vectors' README: beyond +-0.05 (strictly,
// which is how its accuracy figures were computed).
func class3(v float64) int {
	switch {
	case v > 0.05:
		return 1
	case v < -0.05:
		return -1
	}
	return 0
}

func TestParity(t *testing.T) {
	a := New()
	for _, tc := range []struct {
		file  string
		wantR float64
	}{
		{"tweets.tsv", 0.872},
		{"movie_reviews.tsv", 0.428},
	} {
		t.Run(tc.file, func(t *testing.T) {
			rows := loadRows(t, tc.file)
			var okC, okP, okU, okN, exact, accOurs, accRef int
			ours := make([]float64, len(rows))
			refs := make([]float64, len(rows))
			human := make([]float64, len(rows))
			for i, r := range rows {
				s := a.PolarityScores(r.text)
				ours[i], refs[i], human[i] = s.Compound, r.ref.Compound, r.humanMean
				c := math.Abs(s.Compound-r.ref.Compound) <= 0.001+1e-9
				p := math.Abs(s.Pos-r.ref.Pos) <= 0.002+1e-9
				u := math.Abs(s.Neu-r.ref.Neu) <= 0.002+1e-9
				n := math.Abs(s.Neg-r.ref.Neg) <= 0.002+1e-9
				okC, okP, okU, okN = okC+b2i(c), okP+b2i(p), okU+b2i(u), okN+b2i(n)
				if s == r.ref {
					exact++
				} else {
					t.Logf("row %s differs: got %+v want %+v: %q", r.id, s, r.ref, r.text)
				}
				h := class3(r.humanMean / 4)
				accOurs += b2i(class3(s.Compound) == h)
				accRef += b2i(class3(r.ref.Compound) == h)
			}
			n := float64(len(rows))
			t.Logf("%s: %d rows; within tolerance: compound %.4f, pos %.4f, neu %.4f, neg %.4f; identical %.4f",
				tc.file, len(rows), float64(okC)/n, float64(okP)/n, float64(okU)/n, float64(okN)/n, float64(exact)/n)
			r, rRef := pearson(ours, human), pearson(refs, human)
			t.Logf("%s: Pearson r vs human_mean %.4f (reference %.4f, published %.3f); 3-class accuracy %.4f (reference %.4f)",
				tc.file, r, rRef, tc.wantR, float64(accOurs)/n, float64(accRef)/n)
			for name, ok := range map[string]int{"compound": okC, "pos": okP, "neu": okU, "neg": okN} {
				if float64(ok)/n < 0.995 {
					t.Errorf("%s within tolerance for only %.4f of rows", name, float64(ok)/n)
				}
			}
			if math.Abs(r-tc.wantR) > 0.003 {
				t.Errorf("Pearson r = %.4f, want %.3f +- 0.003", r, tc.wantR)
			}
		})
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
