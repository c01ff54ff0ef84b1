//go:build !linux

package balancer_test

import "time"

// threadCPUTime is not measured here: benchmarks report no caller-cpu-ns/op.
func threadCPUTime() time.Duration { return 0 }
