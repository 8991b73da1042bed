// Package dyntest gives tests a DynamoDB table of their own on the endpoint named by
// ASYNCFN_TEST_DYNAMODB, usually dynalite started from the repository's root with
// StartCommand:
//
//	npm ci --prefix .ci/dynalite && node .ci/dynalite/node_modules/dynalite/cli.js --port 4567 &
//	ASYNCFN_TEST_DYNAMODB=http://127.0.0.1:4567 go test ./dynamodb/...
package dyntest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/asyncfn/asyncfn/dynamodb"
)

// EnvVar names the endpoint of the DynamoDB-compatible server that tests use.
const EnvVar = "ASYNCFN_TEST_DYNAMODB"

// StartCommand starts dynalite on port 4567 from the repository's root, as the README says.
const StartCommand = "npm ci --prefix .ci/dynalite && node .ci/dynalite/node_modules/dynalite/cli.js --port 4567"

// Endpoint returns the test endpoint. Unset, it skips the test, or fails it under CI (CI
// set), where a missing server must not pass as a green run.
func Endpoint(t testing.TB) string {
	t.Helper()
	endpoint := os.Getenv(EnvVar)
	if endpoint == "" {
		msg := EnvVar + " is not set: start dynalite (" + StartCommand + " &) and set " + EnvVar + "=http://127.0.0.1:4567"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return endpoint
}

// Table creates a table with a random name on the test endpoint, deletes it when the test
// ends, and returns the store URL for dynamodb.Open.
func Table(t testing.TB) string {
	t.Helper()
	q := url.Values{"endpoint": {Endpoint(t)}, "region": {"us-east-1"}}
	storeURL := fmt.Sprintf("dynamodb://asyncfn-test-%016x?%s", rand.Uint64(), q.Encode())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := dynamodb.Open(ctx, storeURL, dynamodb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTable(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.DeleteTable(ctx); err != nil {
			t.Errorf("delete test table: %v", err)
		}
	})
	return storeURL
}
