package grpcfleet_test

import (
	"context"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/examples/grpcfleet"
)

// The fleet under its faults: a server killed and restarted, another slowed.
// No read and no keyed reservation fails as the client sees it, every key
// reserves once however often it is sent, and the slow server's share of the
// calls falls.
func TestFleetUnderFaults(t *testing.T) {
	rep, err := grpcfleet.Run(context.Background(), grpcfleet.Config{Duration: 5 * time.Second, Workers: 6, SlowBy: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep, rep.FirstError)
	for _, b := range rep.Broken() {
		t.Error(b)
	}
	if rep.Calls < 100 {
		t.Errorf("only %d calls made", rep.Calls)
	}
	if rep.Replays == 0 {
		t.Error("no duplicate reservation was replayed")
	}
	if rep.SlowShare >= 0.2 {
		t.Errorf("slow server took %.1f %% of the calls after it slowed, want under 20 %%", 100*rep.SlowShare)
	}
	for i, n := range rep.ServerCalls {
		if n == 0 {
			t.Errorf("server %d took no calls", i)
		}
	}
}
