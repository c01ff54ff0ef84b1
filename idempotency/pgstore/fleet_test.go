package pgstore

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/idempotencytest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// TestCrashes kills worker processes at the dangerous points of their runs
// (idempotencytest.RunCrashes) over 1,000 keys with three concurrent
// duplicates each. The business table has no unique constraint: each order
// is inserted in the transaction that completes its key with CompleteTx, which
// checks the fencing token, so that is the only line of defence. Exactly one
// order per key must result.
func TestCrashes(t *testing.T) {
	past := 1200 * time.Millisecond // over half the 2 s lease
	idempotencytest.RunCrashes(t, idempotencytest.CrashConfig{
		Kills: []idempotencytest.Kill{
			{Point: idempotencytest.PointBeforeWrite, From: 50},
			{Point: idempotencytest.PointAfterWrite, From: 100},
			{Point: idempotencytest.PointBeforeWrite, From: 150, Delay: past},
			{Point: idempotencytest.PointAfterComplete, From: 300},
			{Point: idempotencytest.PointAfterWrite, From: 400},
			{Point: idempotencytest.PointBeforeWrite, From: 500, Delay: past},
		},
		Start: func(t *testing.T) string {
			pool := serverPool(t)
			schema := testSchema(t, pool)
			storeIn(t, pool, schema, nil)
			_, err := pool.Exec(context.Background(), "CREATE TABLE "+schema+".orders (id bigserial PRIMARY KEY, key text NOT NULL)")
			require.NoError(t, err)
			return schema
		},
		Worker: func(t *testing.T, schema string) (idempotency.Store, idempotencytest.Op) {
			pool := serverPool(t, func(c *pgxpool.Config) { c.MaxConns = 24 })
			s, err := New(Config{Pool: pool, Table: schema + ".records"})
			require.NoError(t, err)
			return s, func(ctx context.Context, key string, hook func(string)) (string, error) {
				hook(idempotencytest.PointBeforeWrite)
				var id string
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					if err := tx.QueryRow(ctx, "INSERT INTO "+schema+".orders (key) VALUES ($1) RETURNING id::text", key).Scan(&id); err != nil {
						return err
					}
					hook(idempotencytest.PointAfterWrite)
					value, err := idempotency.EncodeResult(id)
					if err != nil {
						return err
					}
					if err := s.CompleteTx(ctx, tx, idempotency.LeaseFromContext(ctx), value); err != nil {
						return err
					}
					hook(idempotencytest.PointAfterComplete)
					return nil
				})
				return id, err
			}
		},
		Rows: func(t *testing.T, schema string) (int, map[string]string) {
			rows, err := serverPool(t).Query(context.Background(), "SELECT key, id::text FROM "+schema+".orders")
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

// faultPool returns a pool through p.
func faultPool(t *testing.T, p *idempotencytest.FaultProxy) *pgxpool.Pool {
	cfg, err := pgxpool.ParseConfig(pgURL(t))
	require.NoError(t, err)
	return newPool(t, pgURL(t), func(c *pgxpool.Config) {
		c.ConnConfig.Host = "127.0.0.1"
		port, _ := strconv.Atoi(p.Addr()[strings.LastIndexByte(p.Addr(), ':')+1:])
		c.ConnConfig.Port = uint16(port)
		c.ConnConfig.ConnectTimeout = time.Second
		c.ConnConfig.Fallbacks = nil
		c.ConnConfig.Password = cfg.ConnConfig.Password
		c.MaxConns = 8
	})
}

// TestFaultConnectionCut cuts the link to PostgreSQL while workers run
// claim-then-complete requests, then restores it: the requests in the cut
// fail with a clear error, and once the server is back no key stays wedged
// past its lease.
func TestFaultConnectionCut(t *testing.T) {
	pool := serverPool(t)
	schema := testSchema(t, pool)
	storeIn(t, pool, schema, nil) // migrate directly
	p := idempotencytest.NewFaultProxy(t, pgAddr(t, pool))
	clk := bulwarktest.NewClock(time.Time{})
	s, err := New(Config{Pool: faultPool(t, p), Table: schema + ".records", TestClock: clk})
	require.NoError(t, err)
	idempotencytest.RunOutage(t, s, clk, p.Cut, p.Restore, func(err error) bool {
		return strings.HasPrefix(err.Error(), "pgstore: ") && (isNetError(err) || errors.Is(err, context.DeadlineExceeded) ||
			strings.Contains(err.Error(), "connection refused"))
	})
}

// pgAddr returns host:port of the test server.
func pgAddr(t *testing.T, pool *pgxpool.Pool) string {
	c := pool.Config().ConnConfig
	return c.Host + ":" + strconv.Itoa(int(c.Port))
}

// TestFaultDeadline black-holes the link: a call returns by its context's
// deadline with an error saying so, and the store works again once the link
// is back.
func TestFaultDeadline(t *testing.T) {
	pool := serverPool(t)
	schema := testSchema(t, pool)
	storeIn(t, pool, schema, nil)
	p := idempotencytest.NewFaultProxy(t, pgAddr(t, pool))
	clk := bulwarktest.NewClock(time.Time{})
	s, err := New(Config{Pool: faultPool(t, p), Table: schema + ".records", TestClock: clk})
	require.NoError(t, err)
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
		if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "pgstore: "+tt.op) {
			t.Errorf("%s with a black-holed link = %v, want a pgstore error wrapping context.DeadlineExceeded", tt.op, err)
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
