package asyncfn

import (
	"errors"
	"fmt"
)

// Sentinel errors of the store contract. Engines translate their native errors into these;
// the HTTP layer maps them to status codes in one table.
var (
	// ErrNotFound: no batch with that key, or it has expired.
	ErrNotFound = errors.New("asyncfn: batch not found")
	// ErrDuplicate: Create found a batch with the same key and the same payload.
	ErrDuplicate = errors.New("asyncfn: batch already exists")
	// ErrConflict: Create found a batch with the same key and a different payload.
	ErrConflict = errors.New("asyncfn: batch id reused with a different body")
	// ErrLeaseLost: the caller no longer holds the batch's lease (it expired and another
	// worker claimed it, or the batch is already finished).
	ErrLeaseLost = errors.New("asyncfn: lease lost")
	// ErrNotClaimable: ClaimKey found the batch, but it is running under a live lease,
	// waiting for its backoff, or finished.
	ErrNotClaimable = errors.New("asyncfn: batch not claimable")
	// ErrUnavailable wraps errors that mean the store cannot be reached now; callers answer
	// 503 so that Snowflake retries.
	ErrUnavailable = errors.New("asyncfn: store unavailable")
	// ErrNoWrites wraps errors that mean the store is there but cannot take writes now:
	// its disk is full, it is read-only, it fails with I/O errors, or its file is
	// corrupt. It wraps ErrUnavailable: callers answer 503 so that Snowflake retries,
	// and an operator is told what to fix.
	ErrNoWrites = fmt.Errorf("%w: it cannot take writes now", ErrUnavailable)
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("asyncfn: store closed")
	// ErrCheckpointTooLarge: the values given to Checkpoint over a batch's life would
	// total more than MaxSavedBytes.
	ErrCheckpointTooLarge = errors.New("asyncfn: checkpoint over the batch's limit")
)

// ErrorKind classifies why a batch failed, which decides how it is retried and answered.
type ErrorKind string

const (
	// InvalidInput: the function rejected the rows. Not retried; answered 400 so the query
	// fails at once with the message.
	InvalidInput ErrorKind = "invalid_input"
	// Retryable: the function asks to be tried again later (a throttled downstream
	// service, say). Retried with backoff until the batch's attempts run out.
	Retryable ErrorKind = "retryable"
	// Internal: the function panicked, timed out, returned a plain error, or the attempts
	// ran out. Answered 422: retrying the same batch would fail the same way.
	Internal ErrorKind = "internal"
)

// Error is a batch's failure as stored and as shown to the SQL user: Message is one short
// sentence.
type Error struct {
	Kind    ErrorKind `json:"kind"`
	Message string    `json:"message"`
	err     error
}

func (e *Error) Error() string { return e.Message }
func (e *Error) Unwrap() error { return e.err }

// InvalidInputf returns an error a function uses to reject its rows; the message reaches
// the SQL user, so make it one sentence that names the row or argument at fault.
func InvalidInputf(format string, args ...any) error {
	return &Error{Kind: InvalidInput, Message: fmt.Sprintf(format, args...)}
}

// RetryableError marks err as worth another attempt after a backoff.
func RetryableError(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: Retryable, Message: err.Error(), err: err}
}

// AsError classifies any error returned by a function: an *Error keeps its kind, anything
// else is Internal.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Kind: Internal, Message: err.Error(), err: err}
}

// FieldError is a configuration field's bad value, as the Validate methods of the
// functions' configurations return it. Field is the field's name in lower case with
// dashes (max-attempts), from which a command line, the environment or a configuration
// file makes its own names; Message says what is wrong with the value.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + " " + e.Message }

// BadField returns a *FieldError for field with the formatted message.
func BadField(field, format string, args ...any) error {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}
