package chaos_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/asyncfn/asyncfn/postgres/pgtest"

	"github.com/asyncfn/asyncfn/internal/wait"
)

// chaosBatch is one batch of the load: what was sent, what must come back, and what did.
type chaosBatch struct {
	id   string
	body []byte
	want string
	rows int

	mu       sync.Mutex
	accepted bool     // a POST was answered 202 or 200
	answers  []string // every 200 body
	failure  string   // why the batch was given up, if it was
}

func (b *chaosBatch) record(accepted bool, answer *string, failure string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.accepted = b.accepted || accepted
	if answer != nil {
		b.answers = append(b.answers, *answer)
	}
	if failure != "" && b.failure == "" {
		b.failure = failure
	}
}

// newChaosBatch builds a batch of n one-argument rows, each different, and the exact answer
// of the echo function.
func newChaosBatch(id string, n int, r *rand.Rand) *chaosBatch {
	var body, want bytes.Buffer
	body.WriteString(`{"data":[`)
	want.WriteString(`{"data":[`)
	for i := range n {
		v, _ := json.Marshal(fmt.Sprintf("%s row %d %s", id, i, strings.Repeat("é", r.IntN(20))))
		if i > 0 {
			body.WriteByte(',')
			want.WriteByte(',')
		}
		fmt.Fprintf(&body, "[%d,%s,%d]", i, v, r.IntN(1000)) // a second argument echo ignores
		fmt.Fprintf(&want, "[%d,%s]", i, v)
	}
	body.WriteString(`]}`)
	want.WriteString(`]}`)
	return &chaosBatch{id: id, body: body.Bytes(), want: want.String(), rows: n}
}

// counters are what the load saw, for the report.
type counters struct {
	posts, gets                 atomic.Int64
	postTransport, getTransport atomic.Int64 // transport errors, retried
	post503, get503, post429    atomic.Int64
	outage503                   atomic.Int64 // 503s to requests sent during the outage
	other5xx                    atomic.Int64 // must stay 0
	duplicatePost200            atomic.Int64 // a retried POST answered with the rows
	outageStart, outageEnd      atomic.Int64 // unix nanos
}

func (c *counters) inOutage(sent time.Time) bool {
	s, e := c.outageStart.Load(), c.outageEnd.Load()
	return s != 0 && sent.UnixNano() >= s && (e == 0 || sent.UnixNano() <= e)
}

// TestChaos runs two front ends and two workers as real processes on one PostgreSQL schema
// under a steady Snowflake-like load (POSTs to front end A, GET polls to front end B), and
// meanwhile kills a worker mid-batch, kills front end A and starts it again on its port,
// terminates the processes' database connections twice and cuts them off the database for
// two seconds. Afterwards every accepted batch must have been answered 200 with exactly its
// rows, every answer of a batch the same, no 5xx but 503, and no batch run more often than
// its attempts allow.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs real processes for half a minute")
	}
	t.Parallel()
	schemaDSN := pgtest.Schema(t) // dropped at the end, after the processes are killed
	testStart := time.Now()
	// Each process's connections carry the application name appName_<process>, which the
	// test filters on so that it never touches other tests' or other people's connections.
	suffix := randomSuffix()
	appName := "asyncfn_chaos_" + suffix
	admin := connect(t, pgtest.Param(schemaDSN, "application_name", "asyncfn_chaos_admin_"+suffix))
	var schema string
	if err := admin.QueryRow(context.Background(), "SELECT current_schema()").Scan(&schema); err != nil || !strings.HasPrefix(schema, "asyncfn_test_") {
		t.Fatalf("current_schema() = %q, %v", schema, err)
	}
	// The processes reach PostgreSQL through a proxy that the test can cut.
	px, proxied := pgtest.StartProxy(t, schemaDSN)
	proxied = pgtest.Param(proxied, "connect_timeout", "5")
	dsn := func(process string) string { return pgtest.Param(proxied, "application_name", appName+"_"+process) }

	const (
		maxAttempts = 3
		batches     = 320
		rate        = 12 // batches started per second, at most
		concurrency = 8
		loadWindow  = 45 * time.Second // no new batch after this
		drainWindow = 70 * time.Second // every batch ends by this, answered or not
	)
	frontArgs := func(name, addr string) []string {
		return []string{"serve", "--addr", addr, "--store", dsn(name), "--workers", "0", "--sync-wait", "0", "--poll-wait", "2s",
			"--grace", "10m", "--max-attempts", strconv.Itoa(maxAttempts), "--log-level", "warn"}
	}
	workerArgs := func(name string) []string {
		return []string{"worker", "--store", dsn(name), "--workers", "4", "--lease", "2s",
			"--max-attempts", strconv.Itoa(maxAttempts), "--log-level", "warn"}
	}

	frontA := mustStart(t, "front end A", frontArgs("a", "127.0.0.1:0")...)
	frontB := mustStart(t, "front end B", frontArgs("b", "127.0.0.1:0")...)
	workers := []*proc{mustStart(t, "worker 1", workerArgs("w1")...), mustStart(t, "worker 2", workerArgs("w2")...)}
	procs := []*proc{frontA, frontB} // the front ends, for their logs
	if frontA.addr == "" || frontB.addr == "" {
		t.Fatalf("no address in the banners %q and %q", frontA.banner, frontB.banner)
	}
	var urlA atomic.Value // the front end to POST to; it moves if A cannot get its port back
	urlA.Store("http://" + frontA.addr + "/echo")
	urlB := "http://" + frontB.addr + "/echo"

	// The load: batches ids as Snowflake makes them, each POSTed to A until accepted, then
	// polled on B until answered.
	r := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	queryID := "01c0ffee-" + randomSuffix()
	all := make([]*chaosBatch, batches)
	for i := range all {
		all[i] = newChaosBatch(fmt.Sprintf("%s:%d:1:0:0", queryID, i+1), 50+r.IntN(451), r)
	}
	var c counters
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2 * concurrency}}
	defer client.CloseIdleConnections()

	ctx, cancel := context.WithTimeout(context.Background(), drainWindow)
	defer cancel()
	tokens := make(chan int)
	go func() { // paces the load: a steady rate, bounded in count and time
		defer close(tokens)
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		stop := time.After(loadWindow)
		for i := range all {
			select {
			case <-tick.C:
			case <-stop:
				return
			case <-ctx.Done():
				return
			}
			select {
			case tokens <- i:
			case <-stop:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	var load sync.WaitGroup
	for range concurrency {
		load.Go(func() {
			for i := range tokens {
				runBatch(ctx, client, &urlA, urlB, all[i], &c)
			}
		})
	}
	loadDone := make(chan struct{})
	go func() { load.Wait(); close(loadDone) }()

	// The chaos, on a schedule from the start of the load, while it runs.
	var (
		workerKills, frontKills, terminated, terminations, outages int
		orphanedIDs                                                []string
		chaosLog                                                   []string
	)
	logf := func(format string, args ...any) {
		chaosLog = append(chaosLog, fmt.Sprintf("%5.1fs ", time.Since(testStart).Seconds())+fmt.Sprintf(format, args...))
	}
	loadStart := time.Now()
	at := func(d time.Duration) bool {
		select {
		case <-time.After(time.Until(loadStart.Add(d))):
			return true
		case <-loadDone:
			return false
		}
	}
	terminate := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var n int
		err := admin.QueryRow(ctx, `SELECT count(*) FROM (
				SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE datname = current_database() AND starts_with(application_name, $1) AND pid <> pg_backend_pid()) AS t`, appName+"_").Scan(&n)
		if err != nil {
			t.Errorf("terminating the processes' backends: %v", err)
			return
		}
		terminated += n
		terminations++
		logf("terminated %d backends of %s", n, appName)
	}
	func() {
		if !at(3 * time.Second) {
			return
		}
		// SIGKILL worker 1 while it holds leases (see killMidBatch).
		orphanedIDs = killMidBatch(t, admin, schema, appName+"_w1", workers[0], workers[1])
		workerKills++
		logf("SIGKILLed worker 1 (pid %d) holding %d leases", workers[0].pid(), len(orphanedIDs))
		workers = append(workers, mustStart(t, "worker 3", workerArgs("w3")...))
		logf("started worker 3")

		if !at(7 * time.Second) {
			return
		}
		// SIGKILL front end A amid requests, and start it again on its port.
		port := frontA.addr
		frontA.kill()
		frontKills++
		logf("SIGKILLed front end A (pid %d)", frontA.pid())
		restarted, err := start(t, "front end A again", frontArgs("a2", port)...)
		if err != nil {
			t.Logf("front end A could not get its port back (%v); starting it on another", err)
			restarted = mustStart(t, "front end A elsewhere", frontArgs("a2", "127.0.0.1:0")...)
			urlA.Store("http://" + restarted.addr + "/echo")
		}
		frontA = restarted
		procs = append(procs, frontA)
		logf("started front end A again on %s", frontA.addr)

		if !at(11 * time.Second) {
			return
		}
		terminate()

		if !at(15 * time.Second) {
			return
		}
		c.outageStart.Store(time.Now().UnixNano())
		px.Down()
		outages++
		logf("database unreachable (connections cut, new ones refused)")
		at(17 * time.Second)
		if err := px.Up(); err != nil {
			t.Fatal(err)
		}
		c.outageEnd.Store(time.Now().UnixNano())
		logf("database reachable again")

		if !at(21 * time.Second) {
			return
		}
		terminate()
	}()
	select {
	case <-loadDone:
	case <-ctx.Done():
		<-loadDone
	}
	loadTime := time.Since(loadStart)

	// Every answer once more, from both front ends: the same rows (within the grace period).
	var accepted, answeredOK, gaveUp int
	for _, b := range all {
		b.mu.Lock()
		if b.accepted {
			accepted++
		}
		if b.failure != "" {
			gaveUp++
			t.Errorf("batch %s: %s", b.id, b.failure)
		}
		if b.accepted && len(b.answers) == 0 && b.failure == "" {
			t.Errorf("batch %s was accepted but never answered", b.id)
		}
		for i, a := range b.answers {
			if a != b.want {
				t.Errorf("batch %s answer #%d is %d bytes and not its rows (%d bytes): %.200q", b.id, i+1, len(a), len(b.want), a)
			}
		}
		if len(b.answers) > 0 {
			answeredOK++
		}
		b.mu.Unlock()
	}
	for _, u := range []string{urlA.Load().(string), urlB} {
		for _, b := range all {
			if !b.accepted {
				continue
			}
			status, body, err := send(context.Background(), client, http.MethodGet, u, b.id, nil)
			if err != nil || status != http.StatusOK || body != b.want {
				t.Errorf("GET %s of batch %s after the load = %d, %d bytes, %v; want 200 with its rows", u, b.id, status, len(body), err)
			}
		}
	}

	// The table: each accepted batch succeeded once, within its attempts.
	attempts := map[int]int{}
	rows, err := admin.Query(context.Background(), "SELECT batch_id, state, attempts, max_attempts FROM "+schema+".batches WHERE function = 'echo'")
	if err != nil {
		t.Fatal(err)
	}
	type stored struct {
		state              string
		attempts, maxTries int
	}
	table := map[string]stored{}
	var id string
	var s stored
	if _, err := pgx.ForEachRow(rows, []any{&id, &s.state, &s.attempts, &s.maxTries}, func() error { table[id] = s; return nil }); err != nil {
		t.Fatal(err)
	}
	for _, b := range all {
		if !b.accepted {
			continue
		}
		s, ok := table[b.id]
		switch {
		case !ok:
			t.Errorf("batch %s was accepted but is not in the table", b.id)
			continue
		case s.state != "succeeded":
			t.Errorf("batch %s is %s in the table", b.id, s.state)
		case s.attempts < 1 || s.attempts > s.maxTries || s.maxTries != maxAttempts:
			t.Errorf("batch %s ran %d attempts of %d allowed (want at most %d)", b.id, s.attempts, s.maxTries, maxAttempts)
		}
		attempts[s.attempts]++
	}
	sent := map[string]bool{}
	for _, b := range all {
		sent[b.id] = true
	}
	for id := range table {
		if !sent[id] {
			t.Errorf("the table holds a batch %q that was never sent", id)
		}
	}
	// The batches the killed worker held ran again, elsewhere, as a counted attempt.
	for _, id := range orphanedIDs {
		if s := table[id]; s.attempts < 2 {
			t.Errorf("batch %s, running in the killed worker, is %s after %d attempt(s); want a second attempt", id, s.state, s.attempts)
		}
	}
	if n := c.other5xx.Load(); n > 0 {
		t.Errorf("%d answers were a 5xx other than 503", n)
	}
	if outages > 0 && c.outage503.Load() == 0 {
		t.Errorf("no request got 503 during the database outage: was it one?")
	}
	if workerKills == 0 || frontKills == 0 || terminations == 0 || outages == 0 {
		t.Errorf("the load ended (after %v) before the chaos did: raise its count or lower its rate", loadTime.Round(time.Millisecond))
	}

	var hist []string
	for _, k := range slices.Sorted(maps.Keys(attempts)) {
		hist = append(hist, fmt.Sprintf("%d attempt(s): %d", k, attempts[k]))
	}
	t.Logf("chaos:\n  %s", strings.Join(chaosLog, "\n  "))
	t.Logf("load: %d batches of %d planned in %v (%d to 500 rows, %d at once, at most %d/s)", accepted, batches, loadTime.Round(time.Millisecond), 50, concurrency, rate)
	t.Logf("batches: %d accepted, %d answered 200 with exactly their rows, %d given up, %d in the table", accepted, answeredOK, gaveUp, len(table))
	t.Logf("requests: %d POST (%d transport errors, %d 503, %d 429, all retried with the same batch id; %d retried POSTs answered 200 with the rows), %d GET (%d transport errors, %d 503, retried)",
		c.posts.Load(), c.postTransport.Load(), c.post503.Load(), c.post429.Load(), c.duplicatePost200.Load(), c.gets.Load(), c.getTransport.Load(), c.get503.Load())
	t.Logf("503s: %d in all, %d to requests sent during the %v outage; other 5xx: %d", c.post503.Load()+c.get503.Load(), c.outage503.Load(),
		time.Duration(c.outageEnd.Load()-c.outageStart.Load()).Round(time.Millisecond), c.other5xx.Load())
	t.Logf("attempts: %s", strings.Join(hist, ", "))
	// What the processes logged about it (--log-level warn).
	var logs strings.Builder
	for _, p := range append(append([]*proc{}, procs...), workers...) {
		logs.WriteString(p.stderr.String())
	}
	var logged []string
	for _, m := range []string{
		"could not record the outcome of a batch", "lease lost while running", "could not extend the lease",
		"claiming batches failed", "store notifications interrupted", "could not record the delivery of a batch",
		"level=ERROR msg=\"request failed\"",
	} {
		logged = append(logged, fmt.Sprintf("%q %d", m, strings.Count(logs.String(), m)))
	}
	t.Logf("logged: %s", strings.Join(logged, ", "))
	t.Logf("kills: %d worker SIGKILLed holding %d leases, %d front end SIGKILLed and restarted, %d backends terminated in %d rounds, %d database outage",
		workerKills, len(orphanedIDs), frontKills, terminated, terminations, outages)
}

// runBatch sends one batch as Snowflake does: POST to front end A until it is accepted
// (retrying transport errors, 429 and 503 with the same batch id), then GET on front end B
// until it is answered.
func runBatch(ctx context.Context, client *http.Client, urlA *atomic.Value, urlB string, b *chaosBatch, c *counters) {
	backoff := func(n int) time.Duration { return min(50*time.Millisecond<<n, time.Second) }
	retries := 0
	for posted := false; !posted; {
		if ctx.Err() != nil {
			b.record(false, nil, "not accepted before the test's deadline")
			return
		}
		sent := time.Now()
		c.posts.Add(1)
		status, body, err := send(ctx, client, http.MethodPost, urlA.Load().(string), b.id, b.body)
		switch {
		case err != nil:
			c.postTransport.Add(1)
		case status == http.StatusAccepted:
			b.record(true, nil, "")
			posted = true
		case status == http.StatusOK:
			c.duplicatePost200.Add(1)
			b.record(true, &body, "")
			return
		case status == http.StatusServiceUnavailable:
			c.post503.Add(1)
			if c.inOutage(sent) {
				c.outage503.Add(1)
			}
		case status == http.StatusTooManyRequests:
			c.post429.Add(1)
		case status >= 500:
			c.other5xx.Add(1)
			b.record(false, nil, fmt.Sprintf("POST answered %d %q", status, body))
			return
		default:
			b.record(false, nil, fmt.Sprintf("POST answered %d %q", status, body))
			return
		}
		if !posted {
			wait.Sleep(ctx, backoff(retries))
			retries++
		}
	}
	retries = 0
	for {
		if ctx.Err() != nil {
			b.record(false, nil, "not answered before the test's deadline")
			return
		}
		sent := time.Now()
		c.gets.Add(1)
		status, body, err := send(ctx, client, http.MethodGet, urlB, b.id, nil)
		switch {
		case err != nil:
			c.getTransport.Add(1)
		case status == http.StatusOK:
			b.record(false, &body, "")
			return
		case status == http.StatusAccepted:
			retries = 0
			wait.Sleep(ctx, 20*time.Millisecond) // B holds polls; this only spaces them
			continue
		case status == http.StatusServiceUnavailable:
			c.get503.Add(1)
			if c.inOutage(sent) {
				c.outage503.Add(1)
			}
		case status >= 500:
			c.other5xx.Add(1)
			b.record(false, nil, fmt.Sprintf("GET answered %d %q", status, body))
			return
		default:
			b.record(false, nil, fmt.Sprintf("GET answered %d %q", status, body))
			return
		}
		wait.Sleep(ctx, backoff(retries))
		retries++
	}
}

// send sends one request with Snowflake's headers and reads the whole answer.
func send(ctx context.Context, client *http.Client, method, url, batchID string, body []byte) (int, string, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, "", err
	}
	for k, v := range map[string]string{
		"sf-external-function-query-batch-id":   batchID,
		"sf-external-function-current-query-id": batchID[:strings.IndexByte(batchID, ':')],
		"sf-external-function-format":           "json",
		"sf-external-function-format-version":   "1.0",
		"user-agent":                            "snowflake/1.0",
		"content-type":                          "application/json",
	} {
		req.Header[k] = []string{v}
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	return resp.StatusCode, string(b), nil
}

// killMidBatch SIGKILLs worker w while it runs batches, and returns the batches it held. To
// catch it mid-batch it freezes every worker (SIGSTOP) while batches queue up, lets w alone
// run a few milliseconds, so that it claims some, freezes it again and looks in the table;
// if w holds none, it thaws them all and tries again, a bounded number of times.
func killMidBatch(t *testing.T, admin *pgx.Conn, schema, appName string, w *proc, others ...*proc) []string {
	t.Helper()
	owner := fmt.Sprintf("%%:%d:%%", w.pid()) // pool ids are host:pid:random
	signal := func(sig syscall.Signal, ps ...*proc) {
		for _, p := range ps {
			p.cmd.Process.Signal(sig)
		}
	}
	defer signal(syscall.SIGCONT, others...)
	deadline := time.Now().Add(8 * time.Second)
	for try := 0; time.Now().Before(deadline); try++ {
		signal(syscall.SIGSTOP, others...)
		signal(syscall.SIGSTOP, w)
		time.Sleep(300 * time.Millisecond) // batches queue up
		signal(syscall.SIGCONT, w)
		time.Sleep(time.Duration(2+try%8) * time.Millisecond) // w claims and runs some
		signal(syscall.SIGSTOP, w)
		time.Sleep(100 * time.Millisecond) // what w sent before it froze is done
		var running int
		err := admin.QueryRow(context.Background(), "SELECT count(*) FROM "+schema+".batches WHERE state = 'running' AND owner LIKE $1", owner).Scan(&running)
		if err == nil && running > 0 {
			break
		}
		signal(syscall.SIGCONT, w)
		signal(syscall.SIGCONT, others...)
		time.Sleep(200 * time.Millisecond)
	}
	w.kill()
	return orphans(t, admin, schema, appName, owner)
}

// orphans waits until the backends of a killed process (by application name) are gone, then
// returns the batches still running under its leases.
func orphans(t *testing.T, admin *pgx.Conn, schema, appName, ownerLike string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		var n int
		if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", appName).Scan(&n); err != nil {
			t.Fatalf("waiting for the killed worker's backends to end: %v", err)
		}
		if n == 0 {
			break
		}
		wait.Sleep(ctx, 10*time.Millisecond)
	}
	var ids []string
	if err := admin.QueryRow(ctx, "SELECT coalesce(array_agg(batch_id), '{}') FROM "+schema+".batches WHERE state = 'running' AND owner LIKE $1", ownerLike).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	return ids
}
