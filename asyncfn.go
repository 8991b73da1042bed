// Package asyncfn is the domain of an asynchronous remote service for Snowflake external
// functions: batches and their states, the store contract, the function contract and the
// errors they share. It depends on the standard library only; engines (memory, sqlite,
// postgres, ...) and transports (http, lambda) live in subpackages and talk to each other
// through these types.
package asyncfn

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// Key identifies a batch: the function it was sent to plus Snowflake's
// sf-external-function-query-batch-id header, which is the same on every retry of a batch.
// Two functions never see each other's batches.
type Key struct {
	Function string
	BatchID  string
}

func (k Key) String() string { return k.Function + "/" + k.BatchID }

// State is where a batch is in its life.
type State string

const (
	// Queued batches wait for a worker (new, or handed back after a retryable error or an
	// expired lease).
	Queued State = "queued"
	// Running batches are leased by one worker until LeaseUntil.
	Running State = "running"
	// Succeeded batches hold their Result.
	Succeeded State = "succeeded"
	// Failed batches hold their Error.
	Failed State = "failed"
)

// Done reports whether the state is final.
func (s State) Done() bool { return s == Succeeded || s == Failed }

// Batch is one batch of rows sent by Snowflake and everything the service knows about it.
type Batch struct {
	Key     Key
	QueryID string // sf-external-function-current-query-id, for logs
	State   State

	// Payload is the request body as received (decompressed): {"data": [[0, ...], ...]}.
	Payload []byte
	// Digest is a hash of Payload; a POST with the same key and another digest is a conflict.
	Digest string
	// Rows is the number of rows in Payload.
	Rows int
	// Headers are the request's headers that the function may read (RequestHeader), by
	// lower-case name: Snowflake's custom headers (sf-custom-*, the API key excepted) and
	// context headers (sf-context-*), and the trace context (traceparent, tracestate).
	// Nil if none. They are not part of Digest: a retried POST may differ in them.
	Headers map[string]string

	// Saved are the final values of rows saved by Checkpoint while the batch ran, in row
	// order, without duplicates, nil if none: the rows an attempt need not compute again.
	// Claim and ClaimKey return them, and Get with its payload.
	Saved []SavedRow

	// Result is the response body ready to send, {"data": [[0, v0], ...]}, once Succeeded.
	Result []byte
	// Error says why a Failed batch failed; for a Queued batch it is the last retryable error.
	Error *Error

	// Attempts counts the claims of this batch, including one whose worker died.
	Attempts int
	// MaxAttempts is how many claims the batch may have before it fails.
	MaxAttempts int
	// Owner holds the lease of a Running batch until LeaseUntil.
	Owner      string
	LeaseUntil time.Time
	// RunAfter delays a queued batch's next claim (backoff after a retryable error).
	RunAfter time.Time

	CreatedAt   time.Time
	StartedAt   time.Time // the last claim
	FinishedAt  time.Time
	DeliveredAt time.Time // when the final answer was first served
	// ExpiresAt is when the batch is gone: CreatedAt plus the retention period, cut to
	// the grace period once the answer has been served.
	ExpiresAt time.Time
}

// SavedRow is the final value of one row saved before its batch finished (a checkpoint).
type SavedRow struct {
	// Number is the row's number in the batch (Row.Number).
	Number int
	// Value is the row's value encoded as in the batch's result.
	Value json.RawMessage
}

// MaxSavedBytes bounds the values (the bytes of SavedRow.Value) given to Checkpoint over
// a batch's life: no more than its answer may hold.
const MaxSavedBytes = MaxResultBytes

// Digest returns the digest of a payload as stored in Batch.Digest.
func Digest(payload []byte) string {
	sum := sha256.Sum256(payload)
	return hex.EncodeToString(sum[:16])
}
