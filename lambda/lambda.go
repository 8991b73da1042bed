// Package lambda runs asyncfn on AWS Lambda in the original sample's architecture: a
// function behind Amazon API Gateway stores each POSTed batch in DynamoDB and invokes a
// worker function asynchronously (InvocationType Event) with the batch's key only; the
// worker invocation claims the batch, runs the function and stores the result; GET polls
// read the store. The worker is the same function by default.
//
// Handler.Invoke is the function's one Lambda handler. It tells the events apart by their
// JSON shape:
//
//   - API Gateway REST API proxy events (payload format 1.0) have "httpMethod";
//   - HTTP API events (payload format 2.0) and function URL requests have "version": "2.0"
//     and requestContext.http;
//   - worker events, which Dispatcher sends, are {"asyncfn": {"function": F, "batch_id": B}}.
//
// HTTP events are served by the same http.Handler as `asyncfn serve` (package http).
//
// # Failed worker invocations
//
// Lambda retries an asynchronous invocation that returns an error (twice by default; the
// SAM template in deploy/aws sets it), so a worker invocation returns an error only when a
// retry can help: when the store could not be reached to claim the batch. The retry is
// harmless because claims are conditional: a re-delivered event finds the batch claimed or
// finished and does nothing. Every other outcome is recorded in the store and returns nil:
// a batch whose function failed is stored as failed (Snowflake gets its error), a retryable
// error puts the batch back in the queue, and an event for a function this binary does not
// serve is logged and dropped. A worker that dies mid-batch (the invocation timed out, the
// sandbox crashed) leaves a lease that expires; the next poll that finds it dispatches the
// batch again (asyncfn.ServiceConfig.Stalled), and attempts are counted, so a batch neither
// waits nor is retried forever.
package lambda

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/asyncfn/asyncfn"
)

// Handler answers every event the Lambda function receives.
type Handler struct {
	// HTTP serves API Gateway and function URL requests: asyncfn's protocol handler.
	HTTP http.Handler
	// Pool runs the batches that worker events name.
	Pool *asyncfn.Pool
	// Logger logs the worker events dropped.
	Logger *slog.Logger
}

// WorkerEvent names the batch a worker invocation runs.
type WorkerEvent struct {
	Function string `json:"function"`
	BatchID  string `json:"batch_id"`
}

// workerPayload is the payload of a worker invocation: the WorkerEvent under a key that no
// HTTP event has.
type workerPayload struct {
	Asyncfn *WorkerEvent `json:"asyncfn"`
}

// Invoke handles one event: it answers HTTP events with the response type of their kind,
// and runs the batch of a worker event. Its signature is one lambda.Start accepts.
func (h *Handler) Invoke(ctx context.Context, event json.RawMessage) (any, error) {
	var probe struct {
		Asyncfn        *WorkerEvent `json:"asyncfn"`
		Version        string       `json:"version"`
		HTTPMethod     string       `json:"httpMethod"`
		RequestContext struct {
			DomainName string           `json:"domainName"`
			HTTP       *json.RawMessage `json:"http"`
		} `json:"requestContext"`
	}
	if err := json.Unmarshal(event, &probe); err != nil {
		return nil, fmt.Errorf("asyncfn: the event is not a JSON object: %w", err)
	}
	switch {
	case probe.Asyncfn != nil:
		return nil, h.work(ctx, *probe.Asyncfn)
	case probe.Version == "2.0" && probe.RequestContext.HTTP != nil:
		// Function URLs' domains are <url-id>.lambda-url.<region>.on.aws.
		return h.serveV2(ctx, event, strings.Contains(probe.RequestContext.DomainName, ".lambda-url."))
	case probe.HTTPMethod != "":
		return h.serveV1(ctx, event)
	}
	return nil, errors.New(`asyncfn: unknown event: expected an API Gateway REST or HTTP API proxy event, a function URL request, or a worker event {"asyncfn": {...}}`)
}

// work runs the batch a worker event names, returning an error only when Lambda's retry of
// the event can help (see the package comment).
//
// The invocation's deadline is not passed on. Cancelled by it, the pool would hand the batch
// back as at a shutdown, without counting the attempt, and a function slower than the Lambda
// timeout would be tried forever. Instead Lambda stops the invocation at its timeout, the
// lease expires, and the attempt counts like any dead worker's. (The function's own timeout,
// below Lambda's, normally ends it first.)
func (h *Handler) work(ctx context.Context, e WorkerEvent) error {
	key := asyncfn.Key{Function: e.Function, BatchID: e.BatchID}
	err := h.Pool.Process(context.WithoutCancel(ctx), key)
	if errors.Is(err, asyncfn.ErrUnknownFunction) {
		h.Logger.Error("worker event for a function this binary does not serve; dropped", asyncfn.LogFunction, key.Function, asyncfn.LogBatchID, key.BatchID)
		return nil
	}
	if err != nil {
		return fmt.Errorf("asyncfn: running batch %s: %w", key, err)
	}
	return nil
}
