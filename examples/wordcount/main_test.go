package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/asyncfn/asyncfn/cli"
)

func TestWordCount(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	stdout, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- cli.Main(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--store", filepath.Join(t.TempDir(), "a.db"), "--sync-wait", "5s"},
			func(string) string { return "" }, w, io.Discard, cli.Options{Functions: functions})
		w.Close()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("no startup line: %v (%v)", err, <-done)
	}
	go io.Copy(io.Discard, stdout)
	base := line[strings.Index(line, "http://"):]
	base = base[:strings.IndexByte(base, ' ')]

	req, _ := http.NewRequest("POST", base+"/wordcount", strings.NewReader(`{"data":[[0,"one two three"],[1,null],[2,""]]}`))
	req.Header.Set("sf-external-function-query-batch-id", "b1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `{"data":[[0,3],[1,null],[2,0]]}` {
		t.Fatalf("POST /wordcount = %d %s", resp.StatusCode, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve returned %v", err)
	}
}
