//go:build unix

package balancer_test

import (
	"syscall"
	"time"
)

// cpuTime returns the CPU time, user and system, that the process has used:
// unlike wall time, it does not grow while the benchmark waits for a core on
// a shared machine.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
