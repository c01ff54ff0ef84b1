package pgstore

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/idempotencytest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

const benchClients = 32

// benchStore returns a Store on the test server with room for benchClients
// concurrent callers, on the wall clock.
func benchStore(b *testing.B) idempotency.Store {
	pool := serverPool(b, func(c *pgxpool.Config) { c.MaxConns = benchClients })
	return newStore(b, pool, nil)
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

// BenchmarkCompleteTx measures a first request on the transactional path:
// Claim of a fresh key, then one transaction that inserts the business row
// and completes the key with a 1 KiB result (CompleteTx), then commits.
func BenchmarkCompleteTx(b *testing.B) {
	value := make([]byte, 1024)
	for _, n := range []int{1, benchClients} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			ctx := context.Background()
			pool := serverPool(b, func(c *pgxpool.Config) { c.MaxConns = benchClients })
			schema := testSchema(b, pool)
			s := storeIn(b, pool, schema, nil)
			orders := schema + ".orders"
			if _, err := pool.Exec(ctx, "CREATE TABLE "+orders+" (id bigserial PRIMARY KEY, key text NOT NULL, item text NOT NULL)"); err != nil {
				b.Fatal(err)
			}
			idempotencytest.RunClients(b, n, func(i int64) error {
				key := "k" + strconv.FormatInt(i, 10)
				c, err := s.Claim(ctx, key, []byte("fingerprint"), time.Minute)
				if err != nil {
					return err
				}
				return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, "INSERT INTO "+orders+" (key, item) VALUES ($1, 'book')", key); err != nil {
						return err
					}
					return s.CompleteTx(ctx, tx, idempotency.NewLease(key, c.Token, time.Hour), value)
				})
			})
		})
	}
}
