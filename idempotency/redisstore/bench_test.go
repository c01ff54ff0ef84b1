package redisstore

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/idempotency/idempotencytest"
	"github.com/redis/go-redis/v9"
)

const benchClients = 32

// benchStore returns a Store on the test server with a pool big enough for
// benchClients concurrent callers, on the wall clock.
func benchStore(b *testing.B) *Store {
	rdb := newClient(b, redisAddr(b), func(o *redis.Options) { o.PoolSize = benchClients })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		b.Fatalf("Redis at BULWARK_REDIS_ADDR does not answer: %v", err)
	}
	return newStore(b, rdb, nil)
}

// BenchmarkClaimComplete measures a first request: Claim of a fresh key,
// then Complete with a 1 KiB result.
func BenchmarkClaimComplete(b *testing.B) {
	value := make([]byte, 1024)
	for _, clients := range []int{1, benchClients} {
		b.Run("clients="+strconv.Itoa(clients), func(b *testing.B) {
			s := benchStore(b)
			ctx := context.Background()
			idempotencytest.RunClients(b, clients, func(i int64) error {
				key := "k" + strconv.FormatInt(i, 10)
				c, err := s.Claim(ctx, key, fp, time.Minute)
				if err != nil {
					return err
				}
				return s.Complete(ctx, key, c.Token, value, time.Hour)
			})
		})
	}
}

// BenchmarkReplay measures a duplicate request: Claim of a completed key,
// which returns its 1 KiB result.
func BenchmarkReplay(b *testing.B) {
	value := make([]byte, 1024)
	for _, clients := range []int{1, benchClients} {
		b.Run("clients="+strconv.Itoa(clients), func(b *testing.B) {
			s := benchStore(b)
			ctx := context.Background()
			const keys = 1000
			for i := range keys {
				key := "k" + strconv.Itoa(i)
				c, err := s.Claim(ctx, key, fp, time.Minute)
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Complete(ctx, key, c.Token, value, time.Hour); err != nil {
					b.Fatal(err)
				}
			}
			idempotencytest.RunClients(b, clients, func(i int64) error {
				_, err := s.Claim(ctx, "k"+strconv.FormatInt(i%keys, 10), fp, time.Minute)
				return err
			})
		})
	}
}
