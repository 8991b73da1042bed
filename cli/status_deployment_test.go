package cli_test

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/postgres/pgtest"
)

// TestStatusPageDeployment runs a deployment of two processes on one PostgreSQL schema: A
// runs every batch, B runs none and connects through a proxy with a password in its DSN.
// B's status page, in headless Chromium, shows A's batches in its deployment section
// (queued, running, the oldest queued, finished, the failure with its message) beside
// its own zeros. Then B loses the database: its page still renders, with a note, and
// shows the password nowhere.
func TestStatusPageDeployment(t *testing.T) {
	t.Parallel()
	bin := chromium(t)
	dsn := pgtest.Schema(t)
	px, proxied := pgtest.StartProxy(t, dsn)
	const secret = "hunter2-not-for-the-page" // trust authentication ignores it
	g := newGate()
	fns := []asyncfn.Function{echoFn, {Name: "slow", Func: g.Func()},
		{Name: "picky", Func: asyncfn.FuncOf(func(ctx context.Context, rows []asyncfn.Row) ([]any, error) {
			return nil, asyncfn.InvalidInputf("row 0 is not a date <b>nor</b> a time.")
		})}}
	a := startServer(t, serverConfig{store: dsn, args: []string{"--workers", "2", "--sync-wait", "0", "--poll-wait", "0"}, fns: fns})
	b := startServer(t, serverConfig{store: pgtest.Param(proxied, "password", secret),
		args: []string{"--workers", "0", "--sync-wait", "0", "--poll-wait", "0"}, fns: fns})
	t.Cleanup(g.open) // before the servers stop

	a.post("echo", "done-1", rows("a", "b", "c"))
	checkOK(t, a.await("echo", "done-1", http.StatusOK), echoed("a", "b", "c"))
	a.post("picky", "failing-batch", rows("x"))
	a.await("picky", "failing-batch", http.StatusBadRequest)
	for _, id := range []string{"s1", "s2", "s3"} { // two run (held by the gate), one waits
		if r := a.post("slow", id, rows(id)); r.Status != http.StatusAccepted {
			t.Fatalf("POST slow %s = %v", id, r)
		}
		if id != "s3" {
			g.waitStarted(t)
		}
	}

	var snap struct {
		Deployment struct {
			Available bool
			Queued    int
			Running   int
			Succeeded int
			Failed    int
			Rows      int
			Error     string
			Failures  []struct {
				BatchID string `json:"batch_id"`
				Message string
			}
			This struct{ Succeeded, Running int } `json:"this_process"`
		}
	}
	r := b.do(http.MethodGet, "/status.json", nil)
	if err := json.Unmarshal([]byte(r.Body), &snap); err != nil {
		t.Fatalf("/status.json of B: %v %s", err, r.Body)
	}
	d := snap.Deployment
	if !d.Available || d.Error != "" || d.Queued != 1 || d.Running != 2 || d.Succeeded != 1 || d.Failed != 1 || d.Rows != 3 ||
		len(d.Failures) != 1 || d.Failures[0].BatchID != "failing-batch" || d.This.Succeeded != 0 || d.This.Running != 0 {
		t.Errorf("B's deployment = %+v, want A's batches: 1 queued, 2 running, 1 succeeded of 3 rows, 1 failed; and its own zeros", d)
	}

	dom := string(runChromium(t, bin, b.URL+"/status", "--dump-dom"))
	for _, want := range []struct{ what, re string }{
		{"the JavaScript fetched /status.json and rendered it", `<body data-live="1"`},
		{"the deployment's queued and running batches", `id="d-queued">1</td>.*id="d-running">2</td><td class="n" id="p-running">0</td>`},
		{"the oldest queued batch's wait", `id="d-oldest">[0-9.]+ (ms|s)</td>`},
		{"the deployment's finished batches beside this process's none", `id="d-succeeded">1</td><td class="n" id="p-succeeded">0</td>.*id="d-failed">1</td><td class="n" id="p-failed">0</td>`},
		{"the slow function's line: 1 queued, 2 running, none here",
			`<tr id="dep-fn-slow"><td>/slow</td><td class="n">1</td><td class="n">[0-9.]+ (ms|s)</td><td class="n">2</td><td class="n">0</td>`},
		{"the echo function's line: 1 succeeded, 3 rows",
			`<tr id="dep-fn-echo"><td>/echo</td><td class="n">0</td><td class="n">–</td><td class="n">0</td><td class="n">0</td><td class="n">1</td><td class="n">0</td><td class="n">3</td>`},
		{"the failure run by A, with its message, escaped",
			`<tbody id="dep-failures">.*<td class="id">failing-batch</td><td class="n">1</td><td>invalid_input</td><td class="msg">row 0 is not a date &lt;b&gt;nor&lt;/b&gt; a time.</td>`},
		{"no note", `<div class="note" id="deployment-note"></div>`},
	} {
		if !regexp.MustCompile(`(?s)` + want.re).MatchString(dom) {
			t.Errorf("B's page does not show %s (no match for %s)", want.what, want.re)
		}
	}
	if t.Failed() {
		t.Logf("DOM after JavaScript:\n%s", dom)
	}

	px.Down()
	eventually(t, "B's page to find the store unreachable", func() bool {
		r := b.do(http.MethodGet, "/status.json", nil)
		return strings.Contains(r.Body, "could not be read from the store (it is unreachable)")
	})
	dom = string(runChromium(t, bin, b.URL+"/status", "--dump-dom"))
	note := `<div class="note" id="deployment-note">The deployment's figures could not be read from the store (it is unreachable); this process's own figures are still shown.</div>`
	if !strings.Contains(dom, `<body data-live="1"`) || !strings.Contains(dom, note) {
		t.Errorf("with the store down, B's page is not live with the note %s:\n%s", note, dom)
	}
	if r := b.do(http.MethodGet, "/status.json", nil); strings.Contains(dom+r.Body, secret) {
		t.Errorf("the status page shows the store's password")
	}
	if err := px.Up(); err != nil {
		t.Fatal(err)
	}
}
