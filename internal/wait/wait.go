// Package wait pauses background loops in a way that their shutdown interrupts.
package wait

import (
	"context"
	"time"
)

// Sleep waits d or until ctx is done, and reports whether it waited the whole time.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
