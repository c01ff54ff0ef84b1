package orderservice

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/pgstore"
	"github.com/bulwark-go/bulwark/idempotency/redisstore"
	"github.com/redis/go-redis/v9"
)

// TestFleetDuplicateStorm runs two service instances that share PostgreSQL
// (orders) and an idempotency store (Redis, or PostgreSQL with the keys
// completed in the orders' transactions), and sends the same duplicate storm
// through both: exactly one order per key must be stored.
func TestFleetDuplicateStorm(t *testing.T) {
	stores := []struct {
		name string
		new  func(t *testing.T) idempotency.Store
	}{
		{"redis", func(t *testing.T) idempotency.Store {
			addr := os.Getenv("BULWARK_REDIS_ADDR")
			if addr == "" {
				if os.Getenv("CI") == "true" {
					t.Fatal("BULWARK_REDIS_ADDR is not set, and CI needs the Redis tests")
				}
				t.Skip("BULWARK_REDIS_ADDR is not set: skipping the Redis fleet test")
			}
			rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, PoolSize: 64})
			t.Cleanup(func() { _ = rdb.Close() })
			s, err := redisstore.New(redisstore.Config{Client: rdb, Prefix: fmt.Sprintf("orders-test-%d:", time.Now().UnixNano())})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}},
		{"postgres", func(t *testing.T) idempotency.Store {
			pool := testPool(t)
			table := fmt.Sprintf("idem_test_%d", time.Now().UnixNano())
			s, err := pgstore.New(pgstore.Config{Pool: pool, Table: table})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Migrate(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { dropKeys(pool, table) })
			return s
		}},
	}
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			pool := testPool(t)
			table := fmt.Sprintf("orders_fleet_%d", time.Now().UnixNano())
			repo := newPostgresRepo(t, pool, table)
			store := st.new(t)
			_, pay := newPayments(t)
			// (Nothing is shed: see TestDuplicateStormCreatesOneOrderPerKey.)
			cfg := Config{Repository: repo, IdempotencyStore: store, Partitions: 4, PaymentURL: pay.URL, NoShedding: true}
			if ps, ok := store.(*pgstore.Store); ok {
				cfg.CompleteInTx = ps // the keys share the orders' database
			}
			cfg.Name = "orders-a"
			a := newHarnessConfig(t, cfg)
			cfg.Name = "orders-b"
			b := newHarnessConfig(t, cfg)
			statuses := duplicateStorm(t, []string{a.srv.URL, b.srv.URL}, 1000, 100)
			if n, err := repo.Count(context.Background()); err != nil || n != 100 {
				t.Errorf("orders in PostgreSQL after 1000 requests over 100 keys through 2 instances = %d (%v), want 100 (statuses %v)", n, err, statuses)
			}
		})
	}
}
