//go:build unix

package sqlite

import (
	"fmt"
	"os"
	"syscall"
)

// lockFile takes an exclusive advisory lock on path+"-lock" for the life of the process
// (the kernel drops it when the process dies, however it dies), so that two processes
// never share one database file: leases of the previous owner can then be expired at
// once on open instead of after their deadline.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path+"-lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("the store %s is in use by another asyncfn process (to share a store between processes, use PostgreSQL)", path)
	}
	return f, nil
}
