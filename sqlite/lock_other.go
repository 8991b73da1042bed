//go:build !unix

package sqlite

import "os"

// lockFile opens the lock file without locking it: advisory locks are Unix-only here, so
// on other systems the user must not start two processes on one file.
func lockFile(path string) (*os.File, error) {
	return os.OpenFile(path+"-lock", os.O_RDWR|os.O_CREATE, 0o644)
}
