// Package aws holds the AWS deployment of asyncfn-lambda (template.yaml, Makefile,
// snowflake.sql) and the tests that keep it in step with the code.
package aws

import (
	"context"
	"debug/elf"
	"encoding/json"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/asyncfn/asyncfn/dynamodb"
)

// TestBootstrapBuilds builds the bootstrap for both of Lambda's architectures, as the
// Makefile does without its size and path flags. The build for the architecture that is
// not this machine's has cgo off, as the Makefile's builds do, so a dependency that needs
// cgo fails here.
func TestBootstrapBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: cross-compiling the bootstrap takes a while")
	}
	dir := t.TempDir()
	for _, arch := range []string{"amd64", "arm64"} {
		out := filepath.Join(dir, arch, "bootstrap")
		cmd := exec.Command("go", "build", "-tags", "lambda.norpc", "-o", out, "./cmd/asyncfn-lambda")
		cmd.Dir = filepath.Join("..", "..")
		cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("GOARCH=%s go build: %v\n%s", arch, err, b)
		}
		if fi, err := os.Stat(out); err != nil || fi.Size() == 0 {
			t.Fatalf("GOARCH=%s: no bootstrap (%v)", arch, err)
		}
	}
}

// TestMakeFunctionArch runs the Makefile's function target with ARCH spelt as the template's
// Architecture parameter spells it (x86_64), in a directory of its own so that the checkout
// stays clean, and checks the bootstrap's machine; deploy passes Lambda's spelling to sam
// for either spelling, and an unknown ARCH fails naming the accepted ones.
func TestMakeFunctionArch(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the bootstrap with make")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	t.Parallel()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	makefile := filepath.Join(root, "deploy", "aws", "Makefile")
	mk := func(dir string, args ...string) (string, error) {
		cmd := exec.Command("make", append([]string{"-f", makefile, "-C", dir, "ROOT=" + root}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	dir := t.TempDir()
	if out, err := mk(dir, "function", "ARCH=x86_64"); err != nil {
		t.Fatalf("make function ARCH=x86_64: %v\n%s", err, out)
	}
	f, err := elf.Open(filepath.Join(dir, "build", "function", "bootstrap"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		t.Errorf("make function ARCH=x86_64 built a bootstrap for %v, want x86-64", f.Machine)
	}
	for _, arch := range []string{"x86_64", "amd64"} {
		out, err := mk(dir, "-n", "deploy", "ARCH="+arch)
		if err != nil || !strings.Contains(out, "Architecture=x86_64") {
			t.Errorf("make -n deploy ARCH=%s: %v, want sam deploy with Architecture=x86_64:\n%s", arch, err, out)
		}
	}
	out, err := mk(t.TempDir(), "function", "ARCH=sparc")
	if err == nil || !strings.Contains(out, "ARCH=sparc: use arm64, or amd64 (also spelt x86_64)") {
		t.Errorf("make function ARCH=sparc: %v, want an error naming the accepted values:\n%s", err, out)
	}
}

func readTemplate(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// resource returns the text of a top-level resource of the template: its line and the
// more indented ones after it.
func resource(t *testing.T, template, name string) string {
	t.Helper()
	start := strings.Index(template, "\n  "+name+":\n")
	if start < 0 {
		t.Fatalf("template.yaml has no resource %s", name)
	}
	rest := template[start+1:]
	lines := strings.SplitAfter(rest, "\n")
	n := len(lines[0])
	for _, l := range lines[1:] {
		if strings.TrimSpace(l) != "" && !strings.HasPrefix(l, "   ") && !strings.HasPrefix(strings.TrimSpace(l), "#") {
			break
		}
		n += len(l)
	}
	return rest[:n]
}

func TestTemplate(t *testing.T) {
	tpl := readTemplate(t)
	for _, tc := range []struct{ resource, want string }{
		{"Function", "Runtime: provided.al2023"},
		{"Function", "Handler: bootstrap"},
		{"Function", "Architectures: [!Ref Architecture]"},
		{"Function", "MaximumRetryAttempts: 2"},
		{"Batches", "TimeToLiveSpecification: { AttributeName: ttl, Enabled: true }"},
		{"Api", "DefaultAuthorizer: AWS_IAM"},
		{"Api", "InvokeRole: NONE"},
		{"FunctionRole", "Action: lambda:InvokeFunction"},
		{"FunctionRole", "function:${AWS::StackName}-asyncfn"},
		{"FunctionRole", "- !Sub ${Batches.Arn}/index/*"},
		{"SnowflakeRole", "sts:ExternalId: !Ref SnowflakeExternalId"},
		{"SnowflakeRole", "Action: execute-api:Invoke"},
		{"Function", "ASYNCFN_COMPREHEND: !Ref Comprehend"},
		{"FunctionRole", comprehendStatement},
	} {
		if !strings.Contains(resource(t, tpl, tc.resource), tc.want) {
			t.Errorf("resource %s of template.yaml lacks %q", tc.resource, tc.want)
		}
	}
	if !strings.Contains(tpl, "Architecture:\n    Type: String\n    Default: arm64\n") {
		t.Error("template.yaml: the Architecture parameter does not default to arm64")
	}
	for _, want := range []string{
		"  Comprehend:\n    Type: String\n    Default: \"false\"\n    AllowedValues: [\"false\", \"true\"]\n",
		"  ComprehendEnabled: !Equals [!Ref Comprehend, \"true\"]\n",
	} {
		if !strings.Contains(tpl, want) {
			t.Errorf("template.yaml lacks %q", want)
		}
	}
	// Least privilege: no wildcard action and no policy on every resource, but for
	// Comprehend's one action, which has no resource type, and only when it is enabled.
	tpl = strings.Replace(tpl, comprehendStatement, "", 1)
	for _, bad := range []string{"dynamodb:*", "lambda:*", "comprehend:*", "Action: comprehend", `Resource: "*"`, "Resource: '*'", "Resource: *"} {
		if strings.Contains(tpl, bad) {
			t.Errorf("template.yaml grants %s", bad)
		}
	}
}

// comprehendStatement is the FunctionRole's statement for the comprehend function: present
// only under the condition that the Comprehend parameter sets.
const comprehendStatement = `
              - !If
                - ComprehendEnabled
                - Sid: Comprehend
                  Effect: Allow
                  Action: comprehend:BatchDetectSentiment
                  Resource: "*"
                - !Ref AWS::NoValue
`

// TestTemplateTableMatchesCreateTable checks the template's table against the one the store
// creates (`asyncfn dynamodb create-table`): it captures CreateTable's request on a fake
// DynamoDB and looks for each key, index and projection, in order, in the Batches resource.
func TestTemplateTableMatchesCreateTable(t *testing.T) {
	var mu sync.Mutex
	requests := map[string]json.RawMessage{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "DynamoDB_20120810.")
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		requests[op] = body
		mu.Unlock()
		answer := `{}`
		switch op {
		case "CreateTable":
			answer = `{"TableDescription":{"TableName":"t","TableStatus":"CREATING"}}`
		case "DescribeTable":
			answer = `{"Table":{"TableName":"t","TableStatus":"ACTIVE"}}`
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.Header().Set("X-Amz-Crc32", strconv.FormatUint(uint64(crc32.ChecksumIEEE([]byte(answer))), 10)) // the SDK checks it
		io.WriteString(w, answer)
	}))
	defer srv.Close()
	store, err := dynamodb.Open(context.Background(), "dynamodb://t?endpoint="+srv.URL, dynamodb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CreateTable(context.Background()); err != nil {
		t.Fatal(err)
	}
	type key struct{ AttributeName, KeyType string }
	var table struct {
		BillingMode            string
		AttributeDefinitions   []struct{ AttributeName, AttributeType string }
		KeySchema              []key
		GlobalSecondaryIndexes []struct {
			IndexName  string
			KeySchema  []key
			Projection struct {
				ProjectionType   string
				NonKeyAttributes []string
			}
		}
	}
	var ttl struct {
		TimeToLiveSpecification struct {
			AttributeName string
			Enabled       bool
		}
	}
	if err := json.Unmarshal(requests["CreateTable"], &table); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(requests["UpdateTimeToLive"], &ttl); err != nil {
		t.Fatal(err)
	}
	// The template writes each of these on a line of its own, in CreateTable's order.
	want := []string{"BillingMode: " + table.BillingMode}
	for _, a := range table.AttributeDefinitions {
		want = append(want, "{ AttributeName: "+a.AttributeName+", AttributeType: "+a.AttributeType+" }")
	}
	for _, k := range table.KeySchema {
		want = append(want, "{ AttributeName: "+k.AttributeName+", KeyType: "+k.KeyType+" }")
	}
	for _, ix := range table.GlobalSecondaryIndexes {
		want = append(want, "IndexName: "+ix.IndexName)
		for _, k := range ix.KeySchema {
			want = append(want, "{ AttributeName: "+k.AttributeName+", KeyType: "+k.KeyType+" }")
		}
		want = append(want, "Projection: { ProjectionType: "+ix.Projection.ProjectionType+
			", NonKeyAttributes: ["+strings.Join(ix.Projection.NonKeyAttributes, ", ")+"] }")
	}
	ttlLine := "TimeToLiveSpecification: { AttributeName: " + ttl.TimeToLiveSpecification.AttributeName + ", Enabled: true }"
	if !ttl.TimeToLiveSpecification.Enabled {
		t.Fatal("CreateTable did not enable TTL")
	}
	want = append(want, ttlLine)

	var lines []string
	for _, l := range strings.Split(resource(t, readTemplate(t), "Batches"), "\n") {
		if l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "- ")); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	next := 0
	for _, w := range want {
		found := false
		for next < len(lines) && !found {
			found = lines[next] == w
			next++
		}
		if !found {
			t.Fatalf("the Batches table of template.yaml lacks, at its place, %q; CreateTable makes %s", w, requests["CreateTable"])
		}
	}
	if len(table.GlobalSecondaryIndexes) != strings.Count(resource(t, readTemplate(t), "Batches"), "IndexName:") {
		t.Error("the template's table has other indexes than CreateTable's")
	}
}
