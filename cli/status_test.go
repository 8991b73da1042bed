package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn"
)

// chromium finds headless Chromium: $ASYNCFN_CHROMIUM, or chromium on PATH (Debian's
// package). Without it the test skips, except in CI (CI set), where it fails.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("ASYNCFN_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "headless Chromium is needed to test the status page: apt-get install -y chromium (or set ASYNCFN_CHROMIUM to a Chrome binary)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// runChromium runs headless Chromium on url with extra flags and returns its stdout.
func runChromium(t *testing.T, bin, url string, extra ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--hide-scrollbars", "--user-data-dir=" + t.TempDir(),
		"--window-size=1200,900", "--virtual-time-budget=5000",
	}, extra...)
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\nstderr:\n%s", extra, err, stderr.String())
	}
	return stdout.Bytes()
}

// TestStatusPage processes batches, then opens the status page in headless Chromium
// with authentication on (the key as the Basic password, as a browser would send it) and
// checks that the page, after its JavaScript fetched /status.json and drew the charts,
// shows the function's counts and the batch just processed. It saves a screenshot:
// under -artifacts' output directory, and in $ASYNCFN_SCREENSHOT_DIR (default
// $TMPDIR/asyncfn-screenshots).
func TestStatusPage(t *testing.T) {
	bin := chromium(t)
	fns := []asyncfn.Function{
		{Name: "echo", Func: asyncfn.Echo},
		{Name: "picky", Func: asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
			return nil, asyncfn.InvalidInputf("row 0 is not a date <b>nor</b> a time.")
		})},
	}
	s := opsStart(t, []string{"--api-key", authKey1, "--sync-wait", "5s"}, nil, fns...)
	batchID := fmt.Sprintf("01b2c3d4-0000-%d:1:1:0:0", time.Now().UnixNano()%1e6)
	if r := s.post("echo", batchID, `[[0,"a"],[1,"b"],[2,"c"]]`, "sf-custom-api-key", authKey1); r.Status != 200 {
		t.Fatalf("POST: %d %s", r.Status, r.Body)
	}
	if r := s.post("picky", "failing-batch", `[[0,"x"]]`, "sf-custom-api-key", authKey1); r.Status != 400 {
		t.Fatalf("POST to picky: %d %s", r.Status, r.Body)
	}
	// A batch answered on its POST is recorded just after; a poll of it answers once it
	// is, and the page then reads the store as the batches left it.
	for fn, id := range map[string]string{"echo": batchID, "picky": "failing-batch"} {
		if r := s.do("GET", "/"+fn, "", "sf-external-function-query-batch-id", id, "sf-custom-api-key", authKey1); r.Status != 200 && r.Status != 400 {
			t.Fatalf("GET of %s: %d %s", id, r.Status, r.Body)
		}
	}
	// The JSON the page polls says the same.
	var snap struct {
		Functions []struct {
			Name      string
			Accepted  int
			Succeeded int
			Rows      int
		}
		Recent []struct {
			BatchID string `json:"batch_id"`
		}
	}
	r := s.do("GET", "/status.json", "", "Authorization", "Bearer "+authKey1)
	if err := json.Unmarshal([]byte(r.Body), &snap); err != nil || len(snap.Recent) == 0 || snap.Recent[len(snap.Recent)-1].BatchID != batchID {
		t.Fatalf("/status.json: %v %s", err, r.Body)
	}

	page := strings.Replace(s.URL, "http://", "http://ops:"+authKey1+"@", 1) + "/status"
	dom := string(runChromium(t, bin, page, "--dump-dom"))
	for _, want := range []struct{ what, re string }{
		{"the JavaScript fetched /status.json and rendered it", `<body data-live="1"`},
		{"the connection indicator says live", `<span id="conn" class="ok">live`},
		{"the throughput chart is drawn", `<svg id="chart-rows"[^>]*>.*<polyline class="s1" points="[0-9.,\s]+"`},
		{"the latency chart is drawn", `<svg id="chart-latency"[^>]*>.*<polyline class="s2"`},
		{"the echo row: 1 accepted, 0 duplicates, 0 rejected, 0 running, 1 succeeded, 0 failed, 0 retried, 3 rows",
			`<tr id="fn-echo"><td>/echo</td><td class="id"></td><td class="n">1</td><td class="n">0</td><td class="n">0</td><td class="n">0</td><td class="n">1</td><td class="n">0</td><td class="n">0</td><td class="n">3</td>`},
		{"the batch among the recent batches, with its rows and outcome",
			`<tbody id="recent">.*<td>/echo</td><td class="id">` + regexp.QuoteMeta(batchID) + `</td><td class="n">3</td><td class="n">1</td><td class="succeeded">succeeded</td>`},
		{"the failure with its message, escaped",
			`<tbody id="failures">.*<td class="id">failing-batch</td>.*<td class="msg">row 0 is not a date &lt;b&gt;nor&lt;/b&gt; a time.</td>`},
		{"the queued and running cards", `<div class="v" id="c-queued">0</div>.*<div class="v" id="c-running">0</div>`},
		{"the accepted card counts both batches", `<div class="v" id="c-accepted">2</div>`},
	} {
		if !regexp.MustCompile(`(?s)` + want.re).MatchString(dom) {
			t.Errorf("the page does not show %s (no match for %s)", want.what, want.re)
		}
	}
	if t.Failed() {
		t.Logf("DOM after JavaScript:\n%s", dom)
	}

	shot := filepath.Join(t.ArtifactDir(), "status.png")
	runChromium(t, bin, page, "--screenshot="+shot)
	data, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("the screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1200 || b.Dy() != 900 {
		t.Errorf("screenshot is %dx%d, want 1200x900", b.Dx(), b.Dy())
	}
	colors := map[uint32]bool{}
	for y := 0; y < img.Bounds().Dy(); y += 7 {
		for x := 0; x < img.Bounds().Dx(); x += 7 {
			r, g, b, _ := img.At(x, y).RGBA()
			colors[r>>8<<16|g>>8<<8|b>>8] = true
		}
	}
	if len(colors) < 10 {
		t.Errorf("the screenshot has %d colours: is the page blank?", len(colors))
	}
	dir := os.Getenv("ASYNCFN_SCREENSHOT_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "asyncfn-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	kept := filepath.Join(dir, "status.png")
	if err := os.WriteFile(kept, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the status page: %s", kept)
}

// TestStatusPageRoutes: / redirects to the page without taking the functions' routes, and
// a function named after the page is refused at start.
func TestStatusPageRoutes(t *testing.T) {
	s := opsStart(t, []string{"--sync-wait", "5s"}, nil)
	r := s.do("GET", "/", "")
	if r.Status != 200 || !strings.Contains(r.Body, `id="functions"`) {
		t.Errorf("GET / (following the redirect): %d, want the status page", r.Status)
	}
	if r.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("the status page has no Content-Security-Policy")
	}
	if r := s.post("echo", "after-status", `[[0,"z"]]`); r.Status != 200 {
		t.Errorf("POST /echo beside the status page: %d %s", r.Status, r.Body)
	}
	if r := s.do("GET", "/echo", "", "sf-external-function-query-batch-id", "after-status"); r.Status != 200 {
		t.Errorf("GET /echo beside the status page: %d %s", r.Status, r.Body)
	}
	if r := s.do("POST", "/status", ""); r.Status == 200 {
		t.Errorf("POST /status: 200, want the page to answer GET only")
	}

	for _, name := range []string{"status", "metrics"} {
		err := opsRun(t, []string{"serve", "--addr", "127.0.0.1:0", "--store", "memory"}, nil, asyncfn.Function{Name: name, Func: asyncfn.Echo})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("a function named %s: %v, want an error naming it", name, err)
		}
	}
}
