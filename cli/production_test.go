package cli_test

// Helpers shared by the tests of authentication, metrics and the status page
// (auth_test.go, metrics_test.go, status_test.go), and the tests of the refusal to
// listen insecurely. Names start with ops so as not to collide with other test files.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/cli"
	"github.com/asyncfn/asyncfn/internal/syncbuf"
)

// opsServer is one run of cli.Main serve on a free port.
type opsServer struct {
	t          *testing.T
	URL        string
	MetricsURL string // set when --metrics-addr was given
	stderr     *syncbuf.Buffer
	cancel     context.CancelFunc
	done       chan error
}

var opsMetricsRE = regexp.MustCompile(`^asyncfn: metrics on (http://\S+)/metrics`)

// opsStart runs `serve --addr 127.0.0.1:0 --store <tmp> args...` with env as its
// environment and waits until it serves.
func opsStart(t *testing.T, args []string, env map[string]string, fns ...asyncfn.Function) *opsServer {
	t.Helper()
	if len(fns) == 0 {
		fns = []asyncfn.Function{{Name: "echo", Func: asyncfn.Echo}}
	}
	args = append([]string{"serve", "--addr", "127.0.0.1:0", "--store", filepath.Join(t.TempDir(), "a.db")}, args...)
	ctx, cancel := context.WithCancel(context.Background())
	s := &opsServer{t: t, stderr: &syncbuf.Buffer{}, cancel: cancel, done: make(chan error, 1)}
	pr, pw := io.Pipe()
	go func() {
		err := cli.Main(ctx, args, func(k string) string { return env[k] }, pw, s.stderr, cli.Options{Functions: fns})
		pw.CloseWithError(fmt.Errorf("cli.Main returned: %v", err))
		s.done <- err
	}()
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	wantMetrics := false
	for _, a := range args {
		wantMetrics = wantMetrics || strings.HasPrefix(a, "--metrics-addr")
	}
	timeout := time.After(30 * time.Second)
	for s.URL == "" || (wantMetrics && s.MetricsURL == "") {
		select {
		case line, ok := <-lines:
			if !ok {
				cancel()
				t.Fatalf("cli.Main %v stopped before serving: %v\nstderr:\n%s", args, <-s.done, s.stderr)
			}
			if m := bannerRE.FindStringSubmatch(line); m != nil {
				s.URL = "http://" + m[1]
			}
			if m := opsMetricsRE.FindStringSubmatch(line); m != nil {
				s.MetricsURL = m[1]
			}
		case <-timeout:
			cancel()
			t.Fatalf("cli.Main %v did not start in 30s; stderr:\n%s", args, s.stderr)
		}
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("cli.Main returned %v after its context was cancelled, want nil", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("cli.Main did not return within 30s of its context being cancelled")
		}
		if t.Failed() {
			t.Logf("server stderr:\n%s", s.stderr)
		}
	})
	return s
}

type opsReply struct {
	Status int
	Header http.Header
	Body   string
}

// do sends a request to the server (or to a full URL) with header name/value pairs.
func (s *opsServer) do(method, target, body string, header ...string) opsReply {
	s.t.Helper()
	if !strings.HasPrefix(target, "http") {
		target = s.URL + target
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, target, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return opsReply{res.StatusCode, res.Header, string(b)}
}

// post sends a batch of the given rows (already JSON) to fn with batch id id.
func (s *opsServer) post(fn, id, data string, header ...string) opsReply {
	s.t.Helper()
	return s.do("POST", "/"+fn, `{"data":`+data+`}`, append([]string{"sf-external-function-query-batch-id", id}, header...)...)
}

// scrape reads the metrics at url (the server's /metrics by default).
func (s *opsServer) scrape(header ...string) opsMetrics {
	s.t.Helper()
	url := s.URL + "/metrics"
	if s.MetricsURL != "" {
		url = s.MetricsURL + "/metrics"
	}
	r := s.do("GET", url, "", header...)
	if r.Status != 200 {
		s.t.Fatalf("GET /metrics: %d %s", r.Status, r.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(r.Body))
	if err != nil {
		s.t.Fatalf("parsing /metrics: %v\n%s", err, r.Body)
	}
	return opsMetrics(fams)
}

type opsMetrics map[string]*dto.MetricFamily

// value returns the value of the series of name whose labels include labels (name/value
// pairs): a counter's or gauge's value, a histogram's count; 0 if there is none.
func (m opsMetrics) value(name string, labels ...string) float64 {
	fam := m[name]
	if fam == nil {
		return 0
	}
next:
	for _, mt := range fam.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range mt.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case mt.Counter != nil:
			return mt.Counter.GetValue()
		case mt.Gauge != nil:
			return mt.Gauge.GetValue()
		case mt.Histogram != nil:
			return float64(mt.Histogram.GetSampleCount())
		}
	}
	return 0
}

// opsEventually waits up to 10s for cond.
func opsEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// opsRun runs cli.Main with args and returns its error if it fails before serving; if it
// starts serving (prints its first line) it is stopped and opsRun returns nil.
func opsRun(t *testing.T, args []string, env map[string]string, fns ...asyncfn.Function) error {
	t.Helper()
	if len(fns) == 0 {
		fns = []asyncfn.Function{{Name: "echo", Func: asyncfn.Echo}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	pr, pw := io.Pipe()
	go func() {
		err := cli.Main(ctx, args, func(k string) string { return env[k] }, pw, io.Discard, cli.Options{Functions: fns})
		pw.Close()
		done <- err
	}()
	first := make(chan bool, 1)
	go func() {
		br := bufio.NewReader(pr)
		_, err := br.ReadString('\n')
		first <- err == nil
		io.Copy(io.Discard, br)
	}()
	select {
	case err := <-done:
		return err
	case started := <-first:
		if !started {
			return <-done
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%v: started, then returned %v when stopped", args, err)
		}
		return nil
	case <-time.After(30 * time.Second):
		t.Fatalf("%v: neither started nor failed in 30s", args)
		return nil
	}
}

// TestRefusesToListenInsecurely: serve on an address reachable from other machines
// needs an API key or --insecure; the error names both.
func TestRefusesToListenInsecurely(t *testing.T) {
	const key = "0123456789abcdef0123"
	run := func(args []string, env map[string]string) error {
		return opsRun(t, append([]string{"serve", "--store", "memory", "--workers", "1"}, args...), env)
	}
	for _, addr := range []string{"0.0.0.0:0", ":0"} {
		err := run([]string{"--addr", addr}, nil)
		if err == nil || !strings.Contains(err.Error(), "--api-key") || !strings.Contains(err.Error(), "--insecure") {
			t.Errorf("--addr %s without a key: got %v, want an error naming --api-key and --insecure", addr, err)
		}
	}
	err := run([]string{"--addr", "127.0.0.1:0", "--metrics-addr", "0.0.0.0:0"}, nil)
	if err == nil || !strings.Contains(err.Error(), "--metrics-addr") || !strings.Contains(err.Error(), "--api-key") {
		t.Errorf("--metrics-addr 0.0.0.0:0 without a key: got %v, want an error naming --metrics-addr and --api-key", err)
	}
	err = run([]string{"--addr", "0.0.0.0:0", "--api-key", "short"}, nil)
	if err == nil || !strings.Contains(err.Error(), "--api-key") {
		t.Errorf("a short key: got %v, want an error naming --api-key", err)
	}
	for _, ok := range []struct {
		args []string
		env  map[string]string
	}{
		{[]string{"--addr", "127.0.0.1:0"}, nil},
		{[]string{"--addr", "localhost:0"}, nil},
		{[]string{"--addr", "0.0.0.0:0", "--insecure"}, nil},
		{[]string{"--addr", "0.0.0.0:0"}, map[string]string{"ASYNCFN_INSECURE": "true"}},
		{[]string{"--addr", "0.0.0.0:0", "--api-key", key}, nil},
		{[]string{"--addr", "0.0.0.0:0"}, map[string]string{"ASYNCFN_API_KEYS": key}},
		{[]string{"--addr", "0.0.0.0:0", "--metrics-addr", "0.0.0.0:0", "--api-key", key}, nil},
	} {
		if err := run(ok.args, ok.env); err != nil {
			t.Errorf("%v (env %v): %v, want it to start", ok.args, ok.env, err)
		}
	}
}
