package main

import (
	"encoding/json"
	"testing"

	"github.com/bulwark-go/bulwark"
)

// The limits in the report are those the limiters announced (Event.Limit):
// an instance's, after the trip over its standard output, and the proxy's
// limiter of each backend, by the instance's name; and the proxy's own
// refusals are counted.
func TestTallyLimits(t *testing.T) {
	tl := newTally()
	tl.name("127.0.0.1:9001", "orders-1")

	// From an instance, over the wire.
	b, err := json.Marshal(toWire(bulwark.Event{Kind: bulwark.EventLimitChanged, Component: bulwark.ComponentLimiter, Name: "orders-1", Limit: 7, Reason: "decrease"}))
	if err != nil {
		t.Fatal(err)
	}
	var we wireEvent
	if err := json.Unmarshal(b, &we); err != nil {
		t.Fatal(err)
	}
	tl.Observe(we.event())
	// From the proxy, in process.
	tl.Observe(bulwark.Event{Kind: bulwark.EventLimitChanged, Component: bulwark.ComponentLimiter, Name: proxyName + "/127.0.0.1:9001", Limit: 12})
	tl.Observe(bulwark.Event{Kind: bulwark.EventRejected, Component: bulwark.ComponentBalancer, Name: proxyName, Reason: "limit"})

	lim := tl.limits()
	if lim.now != "orders-1 7" {
		t.Errorf("instances' limits now %q, want %q", lim.now, "orders-1 7")
	}
	if lim.proxyNow != "orders-1 12" {
		t.Errorf("proxy's limits now %q, want %q", lim.proxyNow, "orders-1 12")
	}
	if n := tl.proxyRefused.Load(); n != 1 {
		t.Errorf("proxy refusals = %d, want 1", n)
	}
}
