// Command testsum reads the events of go test -json on standard input, writes the output
// of the tests (as go test -v prints it) to the log file, and prints the result of each
// package, the output of the tests that failed, and one line for each reason tests were
// skipped, which names what enables them. .ci/test runs it.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

type event struct {
	Action, Package, Test, Output string
}

// logPrefix is the file:line that t.Log puts before a message.
var logPrefix = regexp.MustCompile(`^\s*\S+\.go:\d+: `)

func main() {
	logPath := flag.String("log", ".ci/test.log", "file to write the tests' output to")
	flag.Parse()
	log, err := os.Create(*logPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsum:", err)
		os.Exit(1)
	}
	defer log.Close()
	if err := summarize(os.Stdin, log, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "testsum:", err)
		os.Exit(1)
	}
}

func summarize(in io.Reader, log, out io.Writer) error {
	outputs := map[string][]string{} // package and test: its output lines
	skips := map[string]int{}        // reason: tests
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Fprintln(out, sc.Text()) // a build error, say
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			io.WriteString(log, e.Output)
			if e.Test == "" && regexp.MustCompile(`^(ok|FAIL|\?|panic:)\s`).MatchString(e.Output) {
				fmt.Fprint(out, e.Output)
			}
			outputs[key] = append(outputs[key], e.Output)
		case "fail":
			if e.Test != "" {
				fmt.Fprint(out, strings.Join(outputs[key], ""))
			}
		case "skip":
			if e.Test != "" {
				skips[skipReason(outputs[key])]++
			}
		}
		if e.Action == "pass" || e.Action == "fail" || e.Action == "skip" {
			delete(outputs, key)
		}
	}
	reasons := make([]string, 0, len(skips))
	for r := range skips {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		fmt.Fprintf(out, "skipped %d test(s): %s\n", skips[r], r)
	}
	return sc.Err()
}

// skipReason is the last message a skipped test logged, the one t.Skip gave.
func skipReason(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l != "" && !strings.HasPrefix(l, "---") && !strings.HasPrefix(l, "===") {
			return logPrefix.ReplaceAllString(l, "")
		}
	}
	return "(no reason given)"
}
