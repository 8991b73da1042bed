package lambda

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	awslambda "github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/asyncfn/asyncfn"
)

// Dispatcher is the asyncfn.Dispatcher of the Lambda deployment: it invokes the worker
// function asynchronously (InvocationType Event) with a worker event naming the batch.
// The event carries the key only, never the rows: a batch may be ten times larger than
// what Lambda accepts for an asynchronous invocation (1 MB, 256 KB in older accounts).
type Dispatcher struct {
	Client *awslambda.Client
	// Function is the worker function's name or ARN, optionally with a version or alias.
	Function string
}

var _ asyncfn.Dispatcher = (*Dispatcher)(nil)

// NewDispatcher returns a Dispatcher invoking function through a Lambda client configured
// by the SDK's default chain (region and credentials from the environment, as Lambda sets
// them). A non-empty endpoint replaces the Lambda API's, for an emulator in tests.
func NewDispatcher(ctx context.Context, function, endpoint string) (*Dispatcher, error) {
	if function == "" {
		return nil, fmt.Errorf("lambda: no worker function to invoke")
	}
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("lambda: AWS configuration: %w", err)
	}
	client := awslambda.NewFromConfig(cfg, func(o *awslambda.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	})
	return &Dispatcher{Client: client, Function: function}, nil
}

// Dispatch queues a worker invocation for the batch at key. Lambda accepts the event
// before running it, so a nil error means the batch will be run (or its event retried),
// not that it has been.
func (d *Dispatcher) Dispatch(ctx context.Context, key asyncfn.Key) error {
	payload, _ := json.Marshal(workerPayload{Asyncfn: &WorkerEvent{Function: key.Function, BatchID: key.BatchID}}) // strings only: cannot fail
	_, err := d.Client.Invoke(ctx, &awslambda.InvokeInput{
		FunctionName:   aws.String(d.Function),
		InvocationType: types.InvocationTypeEvent,
		Payload:        payload,
	})
	if err != nil {
		return fmt.Errorf("lambda: invoking the worker function %s: %w", d.Function, err)
	}
	return nil
}
