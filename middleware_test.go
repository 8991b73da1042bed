package asyncfn_test

import (
	"context"
	"strings"
	"testing"

	"github.com/asyncfn/asyncfn"
)

// TestWrap: middleware wraps every function, the first outermost, keeping its name.
func TestWrap(t *testing.T) {
	var calls []string
	tag := func(name string) asyncfn.Middleware {
		return func(f asyncfn.Function) asyncfn.Function {
			inner := f.Func
			f.Func = asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
				calls = append(calls, name+":"+f.Name)
				return inner.Call(ctx, rows)
			})
			return f
		}
	}
	fns := asyncfn.Wrap([]asyncfn.Function{{Name: "a", Func: asyncfn.Echo}, {Name: "b", Func: asyncfn.Echo}}, tag("outer"), tag("inner"))
	for _, f := range fns {
		if _, err := f.Func.Call(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(calls, " "); got != "outer:a inner:a outer:b inner:b" {
		t.Errorf("calls %q, want each function's middleware in order, outer first", got)
	}
}
