//go:build !unix

package breaker_test

import "time"

// cpuTime is not measured on this platform.
func cpuTime() time.Duration { return 0 }
