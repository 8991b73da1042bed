package main

// These tests run the built bootstrap under the AWS Lambda Runtime Interface Emulator
// (aws-lambda-rie), which serves the real runtime API on loopback, with the store on
// dynalite. The emulator runs one invocation at a time and answers Event invocations
// synchronously, so each test runs two: a front end, whose worker invocations go to the
// other through ASYNCFN_LAMBDA_ENDPOINT, and that worker. A dispatch therefore returns only
// once the worker has finished the batch.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/dynamodb"
	"github.com/asyncfn/asyncfn/dynamodb/dyntest"
)

// rieInstall is how to install the emulator these tests need.
const rieInstall = "go install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@v0.0.0-20261030222936-bef5c4ba774d"

// emulatorPath returns the emulator's path, $ASYNCFN_TEST_RIE or aws-lambda-rie on PATH.
// Missing, it skips the test, or fails it under CI, where a skip must not pass as green.
func emulatorPath(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the Lambda emulator tests build the bootstrap and run it")
	}
	if p := os.Getenv("ASYNCFN_TEST_RIE"); p != "" {
		return p
	}
	p, err := exec.LookPath("aws-lambda-rie")
	if err != nil {
		msg := "aws-lambda-rie is not on PATH and ASYNCFN_TEST_RIE is not set: install the AWS Lambda Runtime Interface Emulator with\n\t" + rieInstall
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

var (
	buildOnce     sync.Once
	bootstrapPath string
	buildErr      error
	buildDir      string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// bootstrap builds this command once for this machine. It leaves out deploy/aws's
// -trimpath and CGO_ENABLED=0, which change nothing these tests check but would make Go
// compile every dependency again instead of reusing what go vet and go test compiled.
func bootstrap(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "asyncfn-lambda-"); buildErr != nil {
			return
		}
		bootstrapPath = filepath.Join(buildDir, "bootstrap")
		cmd := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", bootstrapPath, ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bootstrapPath
}

// emulator is one aws-lambda-rie process running the bootstrap.
type emulator struct {
	addr string
	// log is the emulator's and the bootstrap's output. A file, not a pipe, so that a line
	// is in it as soon as they have written it.
	log string
}

func (e *emulator) output() string {
	b, _ := os.ReadFile(e.log)
	return string(b)
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startEmulator runs the bootstrap under the emulator with the function's environment
// plus env, until the test ends.
func startEmulator(t *testing.T, name string, env ...string) *emulator {
	t.Helper()
	e := &emulator{addr: freeAddr(t), log: filepath.Join(t.TempDir(), "emulator.log")}
	out, err := os.Create(e.log)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close() // the emulator has its own copy
	// Each emulator also needs a runtime API address of its own (default 127.0.0.1:9001).
	cmd := exec.Command(emulatorPath(t), "--runtime-interface-emulator-address", e.addr, "--runtime-api-address", freeAddr(t), bootstrap(t))
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_REGION=us-east-1",
		"AWS_EC2_METADATA_DISABLED=true",
		"ASYNCFN_LOG_FORMAT=text",
	}, env...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // to stop the bootstrap with it
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s emulator output:\n%s", name, e.output())
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", e.addr); err == nil {
			c.Close()
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("the %s emulator did not listen on %s:\n%s", name, e.addr, e.output())
		}
	}
}

// invoke sends one event and returns the function's response.
func (e *emulator) invoke(t *testing.T, event any) []byte {
	t.Helper()
	payload, err := json.Marshal(event)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+e.addr+"/2015-03-31/functions/function/invocations", "application/json", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("invocation: %d %.500s (%v)", resp.StatusCode, out, err)
	}
	return out
}

// invocations counts the invocations the emulator has started.
func (e *emulator) invocations() int {
	return strings.Count(e.output(), "START RequestId:")
}

// answer is an HTTP answer from either kind of API Gateway response.
type answer struct {
	status int
	body   string
}

// restAPI sends an API Gateway REST API (v1) proxy event with the header names in the
// client's case.
func (e *emulator) restAPI(t *testing.T, method, function, batchID string, body []byte) answer {
	t.Helper()
	ev := events.APIGatewayProxyRequest{HTTPMethod: method, Path: "/" + function, Resource: "/{proxy+}",
		PathParameters: map[string]string{"proxy": function},
		Headers:        map[string]string{"Sf-External-Function-Query-Batch-Id": batchID, "Content-Type": "application/json"},
		MultiValueHeaders: map[string][]string{"Sf-External-Function-Query-Batch-Id": {batchID}, "Content-Type": {"application/json"},
			"User-Agent": {"snowflake/1.0"}},
		Body: string(body)}
	var resp events.APIGatewayProxyResponse
	if err := json.Unmarshal(e.invoke(t, ev), &resp); err != nil || resp.IsBase64Encoded {
		t.Fatalf("REST API response: %v (base64 %v)", err, resp.IsBase64Encoded)
	}
	return answer{resp.StatusCode, resp.Body}
}

// httpAPI sends an HTTP API (v2) event, header names in lower case and the body in base64.
func (e *emulator) httpAPI(t *testing.T, method, function, batchID string, body []byte) answer {
	t.Helper()
	ev := events.APIGatewayV2HTTPRequest{Version: "2.0", RouteKey: "$default", RawPath: "/" + function,
		Headers: map[string]string{"sf-external-function-query-batch-id": batchID, "content-type": "application/json"},
		Body:    base64.StdEncoding.EncodeToString(body), IsBase64Encoded: len(body) > 0}
	ev.RequestContext.HTTP.Method = method
	ev.RequestContext.DomainName = "abc123.execute-api.us-east-1.amazonaws.com"
	var resp events.APIGatewayV2HTTPResponse
	if err := json.Unmarshal(e.invoke(t, ev), &resp); err != nil || resp.IsBase64Encoded {
		t.Fatalf("HTTP API response: %v (base64 %v)", err, resp.IsBase64Encoded)
	}
	return answer{resp.StatusCode, resp.Body}
}

// stack is a front end and its worker on one table.
type stack struct {
	store         *dynamodb.Store
	storeURL      string
	front, worker *emulator
}

// newStack starts a front end and its worker, both with env.
func newStack(t *testing.T, env ...string) *stack {
	emulatorPath(t) // skip before making a table
	storeURL := dyntest.Table(t)
	store, err := dynamodb.Open(context.Background(), storeURL, dynamodb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{store: store, storeURL: storeURL}
	s.worker = startEmulator(t, "worker", append([]string{"ASYNCFN_STORE=" + storeURL}, env...)...)
	s.front = s.frontEnd(t, "http://"+s.worker.addr, env...)
	return s
}

// frontEnd starts a front end whose worker invocations go to endpoint. The function name
// is the emulator's: it serves /2015-03-31/functions/function/invocations only.
func (s *stack) frontEnd(t *testing.T, endpoint string, env ...string) *emulator {
	return startEmulator(t, "front end", append([]string{"ASYNCFN_STORE=" + s.storeURL,
		"ASYNCFN_WORKER_FUNCTION=function", "ASYNCFN_LAMBDA_ENDPOINT=" + endpoint, "ASYNCFN_STALLED=1s"}, env...)...)
}

// create stores a batch as a POST would, without dispatching it.
func (s *stack) create(t *testing.T, key asyncfn.Key, payload string) {
	t.Helper()
	now := time.Now()
	_, err := s.store.Create(t.Context(), &asyncfn.Batch{Key: key, State: asyncfn.Queued, Payload: []byte(payload),
		Digest: asyncfn.Digest([]byte(payload)), Rows: 1, MaxAttempts: 3, CreatedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
}

func (s *stack) batch(t *testing.T, key asyncfn.Key) *asyncfn.Batch {
	t.Helper()
	b, err := s.store.Get(t.Context(), key, time.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUnderLambdaEmulator(t *testing.T) {
	s := newStack(t)
	sentimentBody := []byte(`{"data":[[0,"hello world"],[1,"I am happy"]]}`)

	t.Run("REST API event", func(t *testing.T) {
		if a := s.front.restAPI(t, "POST", "sentiment", "q1:1:1:0:0", sentimentBody); a.status != http.StatusAccepted || a.body != `{"state":"queued"}` {
			t.Fatalf("POST: %d %s, want 202 queued", a.status, a.body)
		}
		a := s.front.restAPI(t, "GET", "sentiment", "q1:1:1:0:0", nil)
		if a.status != http.StatusOK {
			t.Fatalf("GET: %d %s", a.status, a.body)
		}
		checkSentiment(t, a.body, "NEUTRAL", "POSITIVE")
	})

	t.Run("HTTP API event", func(t *testing.T) {
		if a := s.front.httpAPI(t, "POST", "sentiment", "q1:1:1:0:1", sentimentBody); a.status != http.StatusAccepted {
			t.Fatalf("POST: %d %s", a.status, a.body)
		}
		a := s.front.httpAPI(t, "GET", "sentiment", "q1:1:1:0:1", nil)
		if a.status != http.StatusOK {
			t.Fatalf("GET: %d %s", a.status, a.body)
		}
		checkSentiment(t, a.body, "NEUTRAL", "POSITIVE")
	})

	t.Run("4096 rows of long texts", func(t *testing.T) {
		var in bytes.Buffer
		in.WriteString(`{"data":[`)
		for i := range 4096 {
			if i > 0 {
				in.WriteByte(',')
			}
			text := fmt.Sprintf("row %d: %s", i, strings.Repeat(`I love it "so" much, but the service was slow. `, 14))
			row, _ := json.Marshal([]any{i, text})
			in.Write(row)
		}
		in.WriteString(`]}`)
		if a := s.front.restAPI(t, "POST", "echo", "big:1:1:0:0", in.Bytes()); a.status != http.StatusAccepted {
			t.Fatalf("POST of %d bytes: %d %s", in.Len(), a.status, a.body)
		}
		a := s.front.httpAPI(t, "GET", "echo", "big:1:1:0:0", nil)
		if a.status != http.StatusOK {
			t.Fatalf("GET: %d %.300s", a.status, a.body)
		}
		// echo answers each row's argument: the answer is the request, row for row.
		if a.body != in.String() {
			t.Fatalf("the answer (%d bytes) differs from the rows sent (%d bytes)", len(a.body), in.Len())
		}
		if len(a.body) < 2<<20 {
			t.Fatalf("the answer is %d bytes; the test wants one far above DynamoDB's 400 KB item limit", len(a.body))
		}
	})

	t.Run("worker event delivered twice runs once", func(t *testing.T) {
		key := asyncfn.Key{Function: "echo", BatchID: "twice:1:1:0:0"}
		before := s.worker.invocations()
		if a := s.front.restAPI(t, "POST", key.Function, key.BatchID, []byte(`{"data":[[0,"x"]]}`)); a.status != http.StatusAccepted {
			t.Fatalf("POST: %d %s", a.status, a.body)
		}
		// Lambda delivers the event again, as it may.
		s.worker.invoke(t, map[string]any{"asyncfn": map[string]string{"function": key.Function, "batch_id": key.BatchID}})
		if b := s.batch(t, key); b.State != asyncfn.Succeeded || b.Attempts != 1 || s.worker.invocations() != before+2 {
			t.Fatalf("batch %s after %d attempts and %d invocations; want succeeded after 1 attempt, 2 invocations",
				b.State, b.Attempts, s.worker.invocations()-before)
		}
	})

	t.Run("POST retried while the batch runs starts nothing", func(t *testing.T) {
		key := asyncfn.Key{Function: "echo", BatchID: "running:1:1:0:0"}
		const body = `{"data":[[0,"x"]]}`
		s.create(t, key, body)
		if _, err := s.store.ClaimKey(t.Context(), key, asyncfn.ClaimParams{Owner: "busy", Now: time.Now(), Lease: time.Minute, Limit: 1}); err != nil {
			t.Fatal(err)
		}
		before := s.worker.invocations()
		if a := s.front.restAPI(t, "POST", key.Function, key.BatchID, []byte(body)); a.status != http.StatusAccepted || a.body != `{"state":"running"}` {
			t.Fatalf("POST: %d %s, want 202 running", a.status, a.body)
		}
		if n := s.worker.invocations() - before; n != 0 {
			t.Fatalf("the retried POST invoked the worker %d times", n)
		}
		if b := s.batch(t, key); b.State != asyncfn.Running || b.Owner != "busy" || b.Attempts != 1 {
			t.Fatalf("batch %+v, want still running under its first claim", b)
		}
	})

	t.Run("a dead worker's batch is picked up again", func(t *testing.T) {
		key := asyncfn.Key{Function: "echo", BatchID: "dead:1:1:0:0"}
		s.create(t, key, `{"data":[[0,"survived"]]}`)
		// A worker claims the batch, then dies: its lease runs out.
		if _, err := s.store.ClaimKey(t.Context(), key, asyncfn.ClaimParams{Owner: "dead", Now: time.Now(), Lease: 500 * time.Millisecond, Limit: 1}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(600 * time.Millisecond)
		a := s.front.restAPI(t, "GET", key.Function, key.BatchID, nil)
		if a.status != http.StatusOK || a.body != `{"data":[[0,"survived"]]}` {
			t.Fatalf("GET: %d %s, want the rows", a.status, a.body)
		}
		if b := s.batch(t, key); b.Attempts != 2 {
			t.Fatalf("batch after %d attempts, want 2", b.Attempts)
		}
	})

	t.Run("failed invoke answers 503, the retried POST completes", func(t *testing.T) {
		const batchID, body = "noworker:1:1:0:0", `{"data":[[0,"late"]]}`
		broken := s.frontEnd(t, "http://"+freeAddr(t), "AWS_MAX_ATTEMPTS=1") // nothing listens there
		a := broken.restAPI(t, "POST", "echo", batchID, []byte(body))
		if a.status != http.StatusServiceUnavailable || !strings.Contains(a.body, "could not start a worker") {
			t.Fatalf("POST: %d %s, want 503", a.status, a.body)
		}
		// Snowflake retries the POST after a backoff, reaching a front end that can invoke:
		// the batch, stored before the 503, has waited past ASYNCFN_STALLED, so it is dispatched.
		time.Sleep(1100 * time.Millisecond)
		if a := s.front.restAPI(t, "POST", "echo", batchID, []byte(body)); a.status != http.StatusAccepted {
			t.Fatalf("retried POST: %d %s", a.status, a.body)
		}
		if a := s.front.httpAPI(t, "GET", "echo", batchID, nil); a.status != http.StatusOK || a.body != `{"data":[[0,"late"]]}` {
			t.Fatalf("GET: %d %s", a.status, a.body)
		}
	})
}

// checkSentiment checks an answer of the sentiment function: rows numbered in order, each
// in AWS Comprehend's shape with the wanted label.
func checkSentiment(t *testing.T, body string, want ...string) {
	t.Helper()
	var out struct {
		Data [][2]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil || len(out.Data) != len(want) {
		t.Fatalf("answer %s: %v, want %d rows", body, err, len(want))
	}
	for i, row := range out.Data {
		var v struct {
			Sentiment                          string
			Positive, Negative, Neutral, Mixed *float64
		}
		if string(row[0]) != fmt.Sprint(i) || json.Unmarshal(row[1], &v) != nil ||
			v.Sentiment != want[i] || v.Positive == nil || v.Negative == nil || v.Neutral == nil || v.Mixed == nil {
			t.Errorf("row %d: %s %s, want row number %d, sentiment %s and the four scores", i, row[0], row[1], i, want[i])
		}
	}
}

// TestFunctionsFileUnderLambdaEmulator: an http function of a functions file
// (ASYNCFN_CONFIG) is served on Lambda: its worker calls the upstream with the batch's
// rows and headers, and the front end answers with the upstream's rows.
func TestFunctionsFileUnderLambdaEmulator(t *testing.T) {
	var got struct {
		sync.Mutex
		batchID, auth string
	}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Data [][2]json.RawMessage }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got.Lock()
		got.batchID, got.auth = r.Header.Get(asyncfn.HeaderBatchID), r.Header.Get("Authorization")
		got.Unlock()
		out := make([][2]any, len(req.Data))
		for i, row := range req.Data {
			out[i] = [2]any{row[0], "upstream saw " + string(row[1])}
		}
		json.NewEncoder(w).Encode(map[string]any{"data": out})
	}))
	t.Cleanup(upstream.Close)
	file := filepath.Join(t.TempDir(), "functions.yaml")
	text := fmt.Sprintf("functions:\n  - name: classify\n    http:\n      url: %s/classify\n      headers:\n        Authorization: {env: CLASSIFY_TOKEN, prefix: \"Bearer \"}\n", upstream.URL)
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newStack(t, "ASYNCFN_CONFIG="+file, "CLASSIFY_TOKEN=t0ken")
	if a := s.front.restAPI(t, "POST", "classify", "q9:1:1:0:0", []byte(`{"data":[[0,"a"],[1,"b"]]}`)); a.status != http.StatusAccepted {
		t.Fatalf("POST: %d %s, want 202", a.status, a.body)
	}
	a := s.front.restAPI(t, "GET", "classify", "q9:1:1:0:0", nil)
	if want := `{"data":[[0,"upstream saw \"a\""],[1,"upstream saw \"b\""]]}`; a.status != http.StatusOK || a.body != want {
		t.Fatalf("GET: %d %s, want 200 %s", a.status, a.body, want)
	}
	got.Lock()
	defer got.Unlock()
	if got.batchID != "q9:1:1:0:0" || got.auth != "Bearer t0ken" {
		t.Errorf("the upstream got batch id %q and Authorization %q, want the batch's and the secret's", got.batchID, got.auth)
	}
}
