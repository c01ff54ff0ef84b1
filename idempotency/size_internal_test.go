package idempotency

import (
	"testing"
	"unsafe"
)

// Shards sit in one slice; each fills a cache line so that two cores working
// on neighbouring shards do not contend.
func TestShardSize(t *testing.T) {
	if n := unsafe.Sizeof(memShard{}); n != 64 {
		t.Errorf("unsafe.Sizeof(memShard{}) = %d, want 64 (one cache line)", n)
	}
}
