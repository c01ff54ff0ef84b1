package otelbulwark

import (
	"context"
	"strconv"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/bulwark-go/bulwark"
)

// TestAttrCacheBounded checks that combinations past maxCachedSets still get
// the right attributes, and that the cache stops growing.
func TestAttrCacheBounded(t *testing.T) {
	var c attrCache
	c.init()
	n := maxCachedSets + 100
	for i := range n {
		e := bulwark.Event{Component: "breaker", Name: "b", Reason: "r" + strconv.Itoa(i)}
		a := c.get(shapeReason, &e)
		got := metric.NewAddConfig(a.add).Attributes()
		want := attribute.NewSet(attribute.String("bulwark.component", "breaker"), attribute.String("bulwark.name", "b"),
			attribute.String("bulwark.reason", "r"+strconv.Itoa(i)))
		if !got.Equals(&want) {
			t.Fatalf("get(reason %d) = %v, want %v", i, got.ToSlice(), want.ToSlice())
		}
	}
	c.mu.Lock()
	size := len(c.dirty)
	c.mu.Unlock()
	if size != maxCachedSets {
		t.Errorf("cache holds %d sets after %d combinations, want %d", size, n, maxCachedSets)
	}
	// A cached combination is found again without a miss once published.
	e := bulwark.Event{Component: "breaker", Name: "b", Reason: "r1"}
	for range 2 * maxCachedSets {
		c.get(shapeReason, &e)
	}
	if _, ok := (*c.read.Load())[keyOf(shapeReason, &e)]; !ok {
		t.Errorf("reason r1 is not in the published read map after repeated lookups")
	}
}

// TestKeyOfIgnoresUnusedFields checks that fields a shape does not use do not
// split cache entries.
func TestKeyOfIgnoresUnusedFields(t *testing.T) {
	a := bulwark.Event{Kind: bulwark.EventPick, Component: "balancer", Name: "lb", Endpoint: bulwark.Endpoint{Addr: "x:1"}, Reason: "p2c", Attempt: 1, Key: "k1"}
	b := a
	b.Reason, b.Attempt, b.Key, b.Outcome = "round_robin", 7, "k2", bulwark.Failure
	if keyOf(shapeBase, &a) != keyOf(shapeBase, &b) {
		t.Errorf("keyOf(shapeBase) differs for events that differ only in unused fields: %+v vs %+v", keyOf(shapeBase, &a), keyOf(shapeBase, &b))
	}
	if keyOf(shapeReason, &a) == keyOf(shapeReason, &b) {
		t.Errorf("keyOf(shapeReason) is the same for different reasons")
	}
}

// TestUncachedSetsHoldNoCells checks that, past maxCachedSets, the counts of
// combinations the cache does not keep go to the SDK at once: none is lost,
// and the Observer keeps no cell for them, which would grow with every
// event.
func TestUncachedSetsHoldNoCells(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	o, err := New(WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil { // counts are held from now on
		t.Fatal(err)
	}
	n := maxCachedSets + 100
	for i := range n {
		o.Observe(bulwark.Event{Kind: bulwark.EventRejected, Component: "breaker", Name: "b", Reason: "r" + strconv.Itoa(i)})
	}
	o.cellsMu.Lock()
	cells := len(o.cells)
	o.cellsMu.Unlock()
	if cells > maxCachedSets {
		t.Errorf("%d cells after %d combinations, want <= %d", cells, n, maxCachedSets)
	}
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "bulwark.breaker.rejections" {
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					total += dp.Value
				}
			}
		}
	}
	if total != int64(n) {
		t.Errorf("bulwark.breaker.rejections sum to %d, want %d", total, n)
	}
}

// TestCounterSlots checks that every family's counters fit the cells of an
// attrEntry, each in its own slot.
func TestCounterSlots(t *testing.T) {
	o, err := New()
	if err != nil {
		t.Fatal(err)
	}
	for id := range o.fams {
		f := &o.fams[id]
		seen := map[uint8]bool{}
		for _, c := range []counter{f.calls, f.rejections, f.transitions, f.retries, f.giveUps, f.hedges, f.budgetExhausted,
			f.picks, f.inflight, f.endpoints, f.endpointChanges, f.ejections, f.probes, f.claims, f.replays, f.conflicts,
			f.mismatches, f.leaseTakeovers, f.storeErrors, f.misuses, f.adjustments, f.events} {
			if c.adder == nil {
				continue // inflight, outside the balancer family
			}
			if c.slot >= numCounters || seen[c.slot] {
				t.Errorf("family %s: counter slot %d out of range or taken twice", familyPrefix[id], c.slot)
			}
			seen[c.slot] = true
		}
	}
}
