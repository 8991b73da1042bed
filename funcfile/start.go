package funcfile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/process"
	"github.com/asyncfn/asyncfn/upstream"
)

// Served are a file's functions, ready to register, with their metrics.
type Served struct {
	Functions []asyncfn.Function
	// Collectors are each function's metrics (upstream.Function, process.Pool), to
	// register with the process's Prometheus registry.
	Collectors []prometheus.Collector
	pools      []*process.Pool
}

// Start makes the file's functions: an http function's client, an exec function's
// processes, which run until Close. ctx bounds starting them. On error, what was started
// is stopped.
func (f *File) Start(ctx context.Context, logger *slog.Logger) (*Served, error) {
	s := &Served{}
	for _, fn := range f.Functions {
		var (
			af  asyncfn.Function
			col prometheus.Collector
		)
		switch {
		case fn.HTTP != nil:
			u, err := upstream.New(*fn.HTTP, logger)
			if err != nil {
				return nil, errors.Join(err, s.Close(ctx))
			}
			af, col = u.Function(), u
		case fn.Rows != nil:
			u, err := upstream.NewRows(*fn.Rows, logger)
			if err != nil {
				return nil, errors.Join(err, s.Close(ctx))
			}
			af, col = u.Function(), u
		default:
			pool, err := process.New(ctx, *fn.Exec, logger)
			if err != nil {
				return nil, errors.Join(fmt.Errorf("%s:%d: the function %s: %w", f.Path, fn.Line, fn.Name, err), s.Close(ctx))
			}
			s.pools = append(s.pools, pool)
			af, col = pool.Function(), pool
		}
		if fn.Checkpoint != nil {
			af.Checkpoint = *fn.Checkpoint
		}
		af.MaxAttempts, af.Backoff = fn.MaxAttempts, fn.Backoff
		s.Functions = append(s.Functions, af)
		s.Collectors = append(s.Collectors, col)
	}
	return s, nil
}

// Close stops the exec functions' processes: SIGTERM, then SIGKILL after their grace
// period or when ctx is done. Stop the runtime first, so that no batch is running on them.
func (s *Served) Close(ctx context.Context) error {
	var errs []error
	for _, p := range s.pools {
		errs = append(errs, p.Close(ctx))
	}
	return errors.Join(errs...)
}
