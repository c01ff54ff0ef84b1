package bulwarkgrpc_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves a goroutine behind: servers,
// connections, balancers and outlier detectors all stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
