package redisstore

import (
	"context"
	"testing"

	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/idempotencytest"
	"github.com/redis/go-redis/v9"
)

const benchClients = 32

// benchStore returns a Store on the test server with room for benchClients
// concurrent callers, on the wall clock.
func benchStore(b *testing.B) idempotency.Store {
	rdb := newClient(b, redisAddr(b), func(o *redis.Options) { o.PoolSize = benchClients })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		b.Fatalf("Redis at BULWARK_REDIS_ADDR does not answer: %v", err)
	}
	return newStore(b, rdb, nil)
}

// BenchmarkClaimComplete measures a first request: Claim of a fresh key,
// then Complete with a 1 KiB result.
func BenchmarkClaimComplete(b *testing.B) {
	idempotencytest.BenchClaimComplete(b, benchStore, 1, benchClients)
}

// BenchmarkReplay measures a duplicate request: Claim of a completed key,
// which returns its 1 KiB result.
func BenchmarkReplay(b *testing.B) {
	idempotencytest.BenchReplay(b, benchStore, 1, benchClients)
}
