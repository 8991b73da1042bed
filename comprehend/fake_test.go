package comprehend_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/comprehend"
	"github.com/asyncfn/asyncfn/comprehend/comprehendtest"
)

// testConfig is a configuration for the fake: static credentials are given to New, and
// backoff is short so that retries take no time.
func testConfig(f *comprehendtest.Server) comprehend.Config {
	cfg := comprehend.DefaultConfig()
	cfg.Region = "us-east-1"
	cfg.Endpoint = f.URL
	cfg.MaxBackoff = 2 * time.Millisecond
	return cfg
}

func newFunction(t testing.TB, cfg comprehend.Config) *comprehend.Function {
	t.Helper()
	fn, err := comprehend.New(context.Background(), cfg, slog.New(slog.NewTextHandler(t.Output(), nil)),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(comprehendtest.AccessKeyID, "secret", "")))
	if err != nil {
		t.Fatal(err)
	}
	return fn
}

// rowsOf makes rows from JSON argument lists: rowsOf(`"text"`, `"text","es"`, `null`).
func rowsOf(args ...string) []asyncfn.Row {
	rows := make([]asyncfn.Row, len(args))
	for i, a := range args {
		var raw []json.RawMessage
		if err := json.Unmarshal([]byte("["+a+"]"), &raw); err != nil {
			panic(err)
		}
		rows[i] = asyncfn.Row{Number: i, Args: raw}
	}
	return rows
}

// call runs fn on rows and returns the rows as Snowflake would get them, or the error.
func call(t *testing.T, fn *comprehend.Function, rows []asyncfn.Row) (string, error) {
	t.Helper()
	out, err := fn.Call(t.Context(), rows)
	if err != nil {
		return "", err
	}
	b, err := asyncfn.EncodeResult(rows, out)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), nil
}
