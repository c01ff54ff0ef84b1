package breaker

import (
	"testing"

	"go.uber.org/goleak"
)

// checkNoLeak returns a function that fails t if goroutines started after the
// call are still running when it is called (goleak retries while they end).
//
//	defer checkNoLeak(t)()
func checkNoLeak(t *testing.T) func() {
	t.Helper()
	before := goleak.IgnoreCurrent()
	return func() {
		t.Helper()
		goleak.VerifyNone(t, before)
	}
}
