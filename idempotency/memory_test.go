package idempotency_test

import (
	"testing"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/idempotencytest"
)

func TestMemoryStoreConformance(t *testing.T) {
	idempotencytest.RunStore(t, func(t *testing.T, clk bulwark.Clock) idempotency.Store {
		s, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{Clock: clk})
		if err != nil {
			t.Fatalf("NewMemoryStore: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
