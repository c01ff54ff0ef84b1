package balancer_test

import (
	"syscall"
	"time"
)

// threadCPUTime returns the CPU time that the calling OS thread has used; a
// benchmark that locks its goroutine to its thread measures with it what
// its own goroutine spends, apart from the balancer's background work.
func threadCPUTime() time.Duration {
	const rusageThread = 1 // RUSAGE_THREAD
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
