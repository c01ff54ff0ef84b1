package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgURL returns the URL of the test server from BULWARK_POSTGRES_URL. When
// it is unset the test skips, or fails under CI=true.
func pgURL(tb testing.TB) string {
	tb.Helper()
	url := os.Getenv("BULWARK_POSTGRES_URL")
	if url == "" {
		if os.Getenv("CI") == "true" {
			tb.Fatal("BULWARK_POSTGRES_URL is unset under CI=true: the pgstore tests need a PostgreSQL server")
		}
		tb.Skip("BULWARK_POSTGRES_URL is unset: skipping the tests that need a PostgreSQL server (set it to a URL such as postgres://user:pass@127.0.0.1:5432/db?sslmode=disable)")
	}
	return url
}

// newPool returns a pool for url, closed when the test ends; opts adjust its
// configuration.
func newPool(tb testing.TB, url string, opts ...func(*pgxpool.Config)) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatalf("BULWARK_POSTGRES_URL: %v", err)
	}
	for _, f := range opts {
		f(cfg)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("pgxpool: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// serverPool returns a pool of the test server, checked with a ping.
func serverPool(tb testing.TB, opts ...func(*pgxpool.Config)) *pgxpool.Pool {
	tb.Helper()
	pool := newPool(tb, pgURL(tb), opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := pool.Ping(ctx); err != nil {
		tb.Fatalf("PostgreSQL at BULWARK_POSTGRES_URL does not answer: %v", err)
	}
	return pool
}

// testSchema creates a schema with a random name, dropped with everything in
// it when the test ends, so that runs never collide.
func testSchema(tb testing.TB, pool *pgxpool.Pool) string {
	tb.Helper()
	var b [8]byte
	_, _ = rand.Read(b[:])
	schema := "bulwarktest_" + hex.EncodeToString(b[:])
	ctx := context.Background()
	if _, err := pool.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		tb.Fatalf("create schema: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// newStore returns a migrated Store on pool in a fresh schema, reading time
// from clk.
func newStore(tb testing.TB, pool *pgxpool.Pool, clk bulwark.Clock) *Store {
	tb.Helper()
	return storeIn(tb, pool, testSchema(tb, pool), clk)
}

// storeIn returns a migrated Store on the table schema.records.
func storeIn(tb testing.TB, pool *pgxpool.Pool, schema string, clk bulwark.Clock) *Store {
	tb.Helper()
	s, err := New(Config{Pool: pool, Table: schema + ".records", TestClock: clk})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	if err := s.Migrate(context.Background()); err != nil {
		tb.Fatalf("Migrate: %v", err)
	}
	return s
}

// counter is a pgx.QueryTracer that counts the statements sent.
type counter struct{ n atomic.Int64 }

func (c *counter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *counter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// isNetError reports whether err comes from the network rather than from the
// store's logic.
func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed)
}
