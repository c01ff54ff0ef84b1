package redisstore

import (
	"testing"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/idempotencytest"
)

func TestConformance(t *testing.T) {
	rdb := serverClient(t)
	idempotencytest.RunStore(t, func(t *testing.T, clk bulwark.Clock) idempotency.Store {
		return newStore(t, rdb, clk)
	})
}
