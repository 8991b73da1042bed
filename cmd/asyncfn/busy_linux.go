package main

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every Linux.
const clockTicks = 100

// othersCPU starts counting the CPU time this machine spends outside this process; the
// func it returns gives how many cores others kept busy on average since, and false where
// the system does not say.
func othersCPU() func() (float64, bool) {
	start := time.Now()
	all0, ok0 := machineTicks()
	own0, ok1 := ownTicks()
	return func() (float64, bool) {
		all1, ok2 := machineTicks()
		own1, ok3 := ownTicks()
		secs := time.Since(start).Seconds()
		if !ok0 || !ok1 || !ok2 || !ok3 || secs <= 0 {
			return 0, false
		}
		return max(float64((all1-all0)-(own1-own0))/clockTicks/secs, 0), true
	}
}

// machineTicks is the CPU time of every core but idle and I/O wait, from /proc/stat.
func machineTicks() (int64, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, false
	}
	var busy int64
	for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
		if i == 3 || i == 4 {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false
		}
		busy += n
	}
	return busy, true
}

// ownTicks is this process's user and system CPU time, from /proc/self/stat.
func ownTicks() (int64, bool) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0, false
	}
	// The command name, in parentheses, may hold spaces: the fields follow the last ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return utime + stime, true
}
