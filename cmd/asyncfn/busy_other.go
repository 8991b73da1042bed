//go:build !linux

package main

// othersCPU is known on Linux only.
func othersCPU() func() (float64, bool) {
	return func() (float64, bool) { return 0, false }
}
