package caller

import (
	"errors"
	"fmt"
)

// Classes of batch failure, for errors.Is on a *BatchError. Each is worded as Snowflake
// words it where its wording is public (its error messages and troubleshooting pages):
//
//   - ErrRemoteStatus: "Request failed for external function F with remote service
//     error: 400 '<body>'" (Snowflake's own wording), for a status other than 200 and 202,
//     and for 429 and 5xx once the retry budget is spent.
//   - ErrUnreachable: "... Error: Remote service cannot be reached. Check the endpoint URL
//     and try again." (Snowflake's), once transport errors have used up the retry budget.
//   - ErrRefused, also an ErrUnreachable and worded as one: a connection refused before
//     the service answered anything, not retried unless Config.WaitForService.
//   - ErrTimeout: "... Error: Timeout was reached" (Snowflake's), when a batch outlives
//     the timeout, usually polling a 202 that never ends.
//   - ErrInvalidJSON, ErrMissingData, ErrRowValues: "... Error: Error parsing JSON:
//     Invalid response" (Snowflake's), with what was wrong: not JSON; no "data" array;
//     a row that is not [row number, one value].
//   - ErrRowCount: "... Error: Function received the wrong number of rows" (Snowflake's).
//   - ErrRowOrder: "... Error: Row numbers out of order" (Snowflake's).
//   - ErrTooLarge: an answer over Snowflake's 10 MB limit (our wording).
//   - ErrChecksum: a Content-MD5 header that does not match the body (our wording).
//   - ErrCanceled: the caller's context ended first; not a Snowflake error.
var (
	ErrRemoteStatus = errors.New("remote service error status")
	ErrUnreachable  = errors.New("remote service cannot be reached")
	ErrTimeout      = errors.New("timeout was reached")
	ErrInvalidJSON  = errors.New("answer is not JSON")
	ErrMissingData  = errors.New("answer has no data array")
	ErrRowCount     = errors.New("wrong number of rows")
	ErrRowOrder     = errors.New("row numbers out of order")
	ErrRowValues    = errors.New("row is not [row number, value]")
	ErrTooLarge     = errors.New("answer over 10 MB")
	ErrChecksum     = errors.New("Content-MD5 mismatch")
	ErrCanceled     = errors.New("canceled")
	ErrRefused      = fmt.Errorf("%w: connection refused before any answer", ErrUnreachable)
)

// BatchError is why a batch failed.
type BatchError struct {
	BatchID  string
	Function string
	// Kind is one of the Err* classes above.
	Kind error
	// Status is the HTTP status of the answer that failed the batch; 0 when there was none.
	Status int
	// Detail is the quoted body for ErrRemoteStatus, else what exactly was wrong.
	Detail string
}

// Error names the batch and gives the message Snowflake would show.
func (e *BatchError) Error() string {
	return "batch " + e.BatchID + ": " + e.Message()
}

// Message is the error as Snowflake words it in the failed query's message.
func (e *BatchError) Message() string {
	prefix := "Request failed for external function " + e.Function
	switch e.Kind {
	case ErrRemoteStatus:
		return fmt.Sprintf("%s with remote service error: %d '%s'", prefix, e.Status, e.Detail)
	case ErrUnreachable, ErrRefused:
		return prefix + ". Error: Remote service cannot be reached. Check the endpoint URL and try again. Last error: " + e.Detail
	case ErrTimeout:
		return prefix + ". Error: Timeout was reached: " + e.Detail
	case ErrInvalidJSON, ErrMissingData, ErrRowValues:
		return prefix + ". Error: Error parsing JSON: Invalid response: " + e.Detail
	case ErrRowCount:
		return prefix + ". Error: Function received the wrong number of rows: " + e.Detail
	case ErrRowOrder:
		return prefix + ". Error: Row numbers out of order: " + e.Detail
	case ErrTooLarge:
		return prefix + ". Error: Response size exceeds the 10 MB limit: " + e.Detail
	case ErrChecksum:
		return prefix + ". Error: Content-MD5 of the response does not match its body: " + e.Detail
	default:
		return prefix + ". Error: " + e.Detail
	}
}

// Unwrap returns the class, for errors.Is.
func (e *BatchError) Unwrap() error { return e.Kind }

// answerError is a failed check of a 200 answer, before it is tied to its batch.
type answerError struct {
	kind   error
	detail string
}

func (e *answerError) Error() string { return e.detail }

// Unwrap returns the class, for errors.Is.
func (e *answerError) Unwrap() error { return e.kind }

func answerErrorf(kind error, format string, args ...any) *answerError {
	return &answerError{kind: kind, detail: fmt.Sprintf(format, args...)}
}
