package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/bulwarktest"
)

// A goroutine that looked a bucket up just before a sweep or an eviction
// removed it must not take tokens from it: it would pass beside the fresh
// bucket that the next caller creates. Removal marks the bucket dead, and
// takers of a dead bucket look the key up again.
func TestEvictedBucketIsDead(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	g, err := NewGroup(GroupConfig{Limit: Config{Rate: 1, Burst: 1, Clock: clk}, IdleTimeout: time.Minute, MaxKeys: 2})
	if err != nil {
		t.Fatal(err)
	}
	now := g.s.now()
	held := g.get("swept", now)
	g.mu.Lock()
	g.sweepLocked(now + int64(time.Minute))
	g.mu.Unlock()
	if _, stored := g.s.decide(context.Background(), &held.tat, "swept", now, 1); stored != dead {
		t.Fatal("a swept bucket still takes tokens")
	}

	held = g.get("evicted", now)
	g.get("other", now).tat.Store(now + int64(time.Second)) // less full than "evicted"
	g.mu.Lock()
	g.evictLocked()
	g.mu.Unlock()
	if _, stored := g.s.decide(context.Background(), &held.tat, "evicted", now, 1); stored != dead {
		t.Fatal("an evicted bucket still takes tokens")
	}
	if g.Len() != 1 {
		t.Fatalf("Len() = %d, want 1", g.Len())
	}
	// The next caller gets a fresh bucket.
	if !g.Allow("evicted") || !g.Allow("swept") {
		t.Fatal("a removed key did not come back")
	}
}
