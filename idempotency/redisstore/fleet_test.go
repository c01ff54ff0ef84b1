package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/idempotencytest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestCrashes kills worker processes at the dangerous points of their runs
// (idempotencytest.RunCrashes) over 1,000 keys with three concurrent
// duplicates each. The keys are in Redis and the orders in PostgreSQL (named
// by BULWARK_POSTGRES_URL), so no transaction spans both: the order table's
// unique (tenant, key) constraint is the second line of defence, and a run
// that finds its key's order already written returns that order instead of
// writing another. Exactly one order per key must result, and every client
// of a key must see the same order.
func TestCrashes(t *testing.T) {
	pgURL := os.Getenv("BULWARK_POSTGRES_URL")
	if pgURL == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("BULWARK_POSTGRES_URL is unset under CI=true: the crash test keeps its orders in PostgreSQL")
		}
		t.Skip("BULWARK_POSTGRES_URL is unset: the crash test keeps its orders in PostgreSQL")
	}
	newPool := func(t *testing.T) *pgxpool.Pool {
		cfg, err := pgxpool.ParseConfig(pgURL)
		require.NoError(t, err)
		cfg.MaxConns = 24
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		return pool
	}
	idempotencytest.RunCrashes(t, idempotencytest.CrashConfig{
		Start: func(t *testing.T) string {
			prefix := testPrefix(t, serverClient(t))
			var b [8]byte
			_, _ = rand.Read(b[:])
			schema := "bulwarktest_" + hex.EncodeToString(b[:])
			pool := newPool(t)
			ctx := context.Background()
			_, err := pool.Exec(ctx, "CREATE SCHEMA "+schema+`;
CREATE TABLE `+schema+`.orders (id bigserial PRIMARY KEY, tenant text NOT NULL, key text NOT NULL, UNIQUE (tenant, key))`)
			require.NoError(t, err)
			t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE") })
			return prefix + " " + schema
		},
		Worker: func(t *testing.T, env string) (idempotency.Store, idempotencytest.Op) {
			prefix, schema, _ := strings.Cut(env, " ")
			s, err := New(Config{Client: newClient(t, redisAddr(t)), Prefix: prefix})
			require.NoError(t, err)
			pool := newPool(t)
			return s, func(ctx context.Context, key string, hook func(string)) (string, error) {
				hook(idempotencytest.PointBeforeWrite)
				var id string
				err := pool.QueryRow(ctx, "INSERT INTO "+schema+`.orders (tenant, key) VALUES ('t', $1)
ON CONFLICT (tenant, key) DO NOTHING RETURNING id::text`, key).Scan(&id)
				if errors.Is(err, pgx.ErrNoRows) {
					// An earlier run wrote the order and died before
					// completing the key: its order is the result.
					err = pool.QueryRow(ctx, "SELECT id::text FROM "+schema+".orders WHERE tenant = 't' AND key = $1", key).Scan(&id)
				}
				if err != nil {
					return "", err
				}
				hook(idempotencytest.PointAfterWrite)
				return id, nil
			}
		},
		Rows: func(t *testing.T, env string) (int, map[string]string) {
			_, schema, _ := strings.Cut(env, " ")
			rows, err := newPool(t).Query(context.Background(), "SELECT key, id::text FROM "+schema+".orders")
			require.NoError(t, err)
			n, results := 0, map[string]string{}
			for rows.Next() {
				var key, id string
				require.NoError(t, rows.Scan(&key, &id))
				results[key] = id
				n++
			}
			require.NoError(t, rows.Err())
			return n, results
		},
	})
}

// faultClient returns a client through p that gives up quickly, so a cut
// link costs each call little time.
func faultClient(t *testing.T, p *idempotencytest.FaultProxy) *redis.Client {
	return newClient(t, p.Addr(), func(o *redis.Options) {
		o.MaxRetries = 1
		o.DialTimeout = time.Second
		o.ReadTimeout = time.Second
		o.WriteTimeout = time.Second
	})
}

// TestFaultConnectionCut cuts the link to Redis while workers run
// claim-then-complete requests, then restores it: the requests in the cut
// fail with a clear error, and once the server is back no key stays wedged
// past its lease.
func TestFaultConnectionCut(t *testing.T) {
	serverClient(t)
	p := idempotencytest.NewFaultProxy(t, redisAddr(t))
	rdb := faultClient(t, p)
	clk := bulwarktest.NewClock(time.Time{})
	s := newStore(t, rdb, clk)
	idempotencytest.RunOutage(t, s, clk, p.Cut, p.Restore, func(err error) bool {
		return strings.Contains(err.Error(), "store: ") && (isNetError(err) || errors.Is(err, context.DeadlineExceeded))
	})
}

// TestFaultDeadline black-holes the link: a call returns by its context's
// deadline with an error saying so, and the store works again once the link
// is back.
func TestFaultDeadline(t *testing.T) {
	serverClient(t)
	p := idempotencytest.NewFaultProxy(t, redisAddr(t))
	rdb := newClient(t, p.Addr(), func(o *redis.Options) { o.MaxRetries = 1 })
	clk := bulwarktest.NewClock(time.Time{})
	s := newStore(t, rdb, clk)
	ctx := context.Background()

	c, err := s.Claim(ctx, "held", fp, lease)
	require.NoError(t, err)
	p.Blackhole()

	tests := []struct {
		op   string
		call func(context.Context) error
	}{
		{"claim", func(ctx context.Context) error { _, err := s.Claim(ctx, "k", fp, lease); return err }},
		{"complete", func(ctx context.Context) error { return s.Complete(ctx, "held", c.Token, nil, retention) }},
		{"get", func(ctx context.Context) error { _, err := s.Get(ctx, "k"); return err }},
	}
	for _, tt := range tests {
		const deadline = 200 * time.Millisecond
		cctx, cancel := context.WithTimeout(ctx, deadline)
		start := time.Now()
		err := tt.call(cctx)
		took := time.Since(start)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "redisstore: "+tt.op) {
			t.Errorf("%s with a black-holed link = %v, want a redisstore error wrapping context.DeadlineExceeded", tt.op, err)
		}
		if took > deadline+2*time.Second {
			t.Errorf("%s with a black-holed link took %v, want about its deadline %v", tt.op, took, deadline)
		}
	}

	p.Restore()
	var got idempotency.Record
	require.Eventually(t, func() bool {
		got, err = s.Get(ctx, "held")
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "Get after the link is restored")
	if got.Token != c.Token {
		t.Errorf("Get(%q) after restore = %+v, want token %d", "held", got, c.Token)
	}
}
