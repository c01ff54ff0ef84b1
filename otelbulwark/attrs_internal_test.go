package otelbulwark

import (
	"strconv"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

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
