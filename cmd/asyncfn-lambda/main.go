// Command asyncfn-lambda is asyncfn on AWS Lambda: the bootstrap of a provided.al2023
// function behind Amazon API Gateway, which is also its own worker (package lambda tells
// how). It is configured by environment variables (lambda.Config lists them) and serves
// the same functions as asyncfn, and those of a functions file (ASYNCFN_CONFIG).
// deploy/aws builds and deploys it.
package main

import (
	"context"
	"fmt"
	"os"

	awslambda "github.com/aws/aws-lambda-go/lambda"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/dynamodb"
	"github.com/asyncfn/asyncfn/funcfile"
	"github.com/asyncfn/asyncfn/lambda"
	"github.com/asyncfn/asyncfn/sentiment"
)

func main() {
	// Lambda (and its emulator) sets AWS_LAMBDA_RUNTIME_API; without it lambda.Start
	// would exit with a cryptic message.
	if os.Getenv("AWS_LAMBDA_RUNTIME_API") == "" {
		fmt.Fprintln(os.Stderr, "asyncfn-lambda: AWS_LAMBDA_RUNTIME_API is not set: this binary runs on AWS Lambda (see deploy/aws); elsewhere run asyncfn serve")
		os.Exit(2)
	}
	handler, err := setup(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "asyncfn-lambda:", err)
		os.Exit(1)
	}
	awslambda.Start(handler.Invoke)
}

func setup(ctx context.Context) (*lambda.Handler, error) {
	cfg, err := lambda.LoadConfig(os.Getenv)
	if err != nil {
		return nil, err
	}
	logger, err := cfg.Logger(os.Stderr)
	if err != nil {
		return nil, err
	}
	fns := functions()
	if cfg.FunctionsFile != "" {
		file, err := funcfile.Load(cfg.FunctionsFile, os.Getenv)
		if err != nil {
			return nil, fmt.Errorf("ASYNCFN_CONFIG: %w", err)
		}
		// Its processes run as long as the execution environment; Lambda ends them.
		served, err := file.Start(ctx, logger)
		if err != nil {
			return nil, fmt.Errorf("ASYNCFN_CONFIG: %w", err)
		}
		fns = append(fns, served.Functions...)
	}
	store, err := dynamodb.Open(ctx, cfg.Store, dynamodb.Options{Logger: logger})
	if err != nil {
		return nil, err
	}
	return lambda.New(ctx, cfg, store, logger, fns...)
}

// functions are the functions served: those of asyncfn.
func functions() []asyncfn.Function {
	return append([]asyncfn.Function{{Name: "echo", Func: asyncfn.Echo}}, sentiment.Functions()...)
}
