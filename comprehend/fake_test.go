package comprehend_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/comprehend"
)

// request is a BatchDetectSentiment request as the fake received it.
type request struct {
	LanguageCode string
	TextList     []string
}

// reply is what the fake answers: a status and a JSON body.
type reply struct {
	status int
	body   string
}

// fake speaks Comprehend's JSON 1.1 protocol for BatchDetectSentiment: it checks the
// request's target, content type and signature header, records the request, and answers
// what answer returns for it (n counts the requests, from 0). By default every text gets
// the scores of okScore.
type fake struct {
	t      *testing.T
	url    string
	answer func(n int, r request, h *http.Request) reply

	mu       sync.Mutex
	requests []request
}

func newFake(t *testing.T, answer func(n int, r request, h *http.Request) reply) *fake {
	f := &fake{t: t, answer: answer}
	if f.answer == nil {
		f.answer = func(n int, r request, _ *http.Request) reply { return ok(r) }
	}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func (f *fake) serve(w http.ResponseWriter, h *http.Request) {
	bad := func(format string, args ...any) {
		f.t.Errorf("fake Comprehend: "+format, args...)
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"__type":"InvalidRequestException","message":"the test's fake refused the request"}`)
	}
	switch {
	case h.Method != http.MethodPost || h.URL.Path != "/":
		bad("%s %s", h.Method, h.URL.Path)
		return
	case h.Header.Get("X-Amz-Target") != "Comprehend_20171127.BatchDetectSentiment":
		bad("X-Amz-Target %q", h.Header.Get("X-Amz-Target"))
		return
	case h.Header.Get("Content-Type") != "application/x-amz-json-1.1":
		bad("Content-Type %q", h.Header.Get("Content-Type"))
		return
	case !strings.HasPrefix(h.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential=AKIDTEST/"):
		bad("Authorization %q", h.Header.Get("Authorization"))
		return
	}
	var r request
	dec := json.NewDecoder(h.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		bad("body: %v", err)
		return
	}
	f.mu.Lock()
	n := len(f.requests)
	f.requests = append(f.requests, r)
	f.mu.Unlock()
	a := f.answer(n, r, h)
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-RequestId", fmt.Sprintf("req-%d", n))
	w.WriteHeader(a.status)
	io.WriteString(w, a.body)
}

// sent returns the requests received so far.
func (f *fake) sent() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.requests...)
}

// okScore is the default scores, as Comprehend sends them: float32 values in the digits
// of their float64 widening.
const okScore = `{"Mixed":0.0033542951568961143,"Negative":0.0010949420975521207,"Neutral":0.008563132025301456,"Positive":0.9869875907897949}`

// ok answers every text of r with okScore, in the order Comprehend documents.
func ok(r request) reply {
	return withErrors(r, nil)
}

// withErrors answers r with okScore for its texts except those at the given indexes,
// which are in the ErrorList.
func withErrors(r request, failed map[int]bool) reply {
	var results, errs []string
	for i := range r.TextList {
		if failed[i] {
			errs = append(errs, fmt.Sprintf(`{"Index":%d,"ErrorCode":"INTERNAL_SERVER_ERROR","ErrorMessage":"Internal server error"}`, i))
			continue
		}
		results = append(results, fmt.Sprintf(`{"Index":%d,"Sentiment":"POSITIVE","SentimentScore":%s}`, i, okScore))
	}
	return reply{200, `{"ResultList":[` + strings.Join(results, ",") + `],"ErrorList":[` + strings.Join(errs, ",") + `]}`}
}

// apiError is an error answer of the JSON 1.1 protocol.
func apiError(status int, typ, message string) reply {
	return reply{status, fmt.Sprintf(`{"__type":%q,"message":%q}`, typ, message)}
}

// testConfig is a configuration for the fake: static credentials are given to New, and
// backoff is short so that retries take no time.
func testConfig(f *fake) comprehend.Config {
	cfg := comprehend.DefaultConfig()
	cfg.Region = "us-east-1"
	cfg.Endpoint = f.url
	cfg.MaxBackoff = 2 * time.Millisecond
	return cfg
}

func newFunction(t *testing.T, cfg comprehend.Config) *comprehend.Function {
	t.Helper()
	fn, err := comprehend.New(context.Background(), cfg, slog.New(slog.NewTextHandler(t.Output(), nil)),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")))
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
