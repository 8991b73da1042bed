package status

import "time"

// SetClock makes r read the time from now, for tests.
func SetClock(r *Recorder, now func() time.Time) { r.now = now }
