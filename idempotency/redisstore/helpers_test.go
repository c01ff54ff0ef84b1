package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/redis/go-redis/v9"
)

// redisAddr returns the address of the test server from BULWARK_REDIS_ADDR.
// When it is unset the test skips, or fails under CI=true.
func redisAddr(tb testing.TB) string {
	tb.Helper()
	addr := os.Getenv("BULWARK_REDIS_ADDR")
	if addr == "" {
		if os.Getenv("CI") == "true" {
			tb.Fatal("BULWARK_REDIS_ADDR is unset under CI=true: the redisstore tests need a Redis server")
		}
		tb.Skip("BULWARK_REDIS_ADDR is unset: skipping the tests that need a Redis server (set it to host:port, e.g. 127.0.0.1:6379)")
	}
	return addr
}

// redisDB returns the database index named by BULWARK_REDIS_DB, 0 if unset,
// so that tests can keep out of a database that other work uses.
func redisDB(tb testing.TB) int {
	v := os.Getenv("BULWARK_REDIS_DB")
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		tb.Fatalf("BULWARK_REDIS_DB=%q is not a database index", v)
	}
	return n
}

// newClient returns a client of addr that is closed when the test ends. The
// server must answer a PING.
func newClient(tb testing.TB, addr string, opts ...func(*redis.Options)) *redis.Client {
	tb.Helper()
	o := &redis.Options{Addr: addr, ContextTimeoutEnabled: true, DB: redisDB(tb)}
	for _, f := range opts {
		f(o)
	}
	c := redis.NewClient(o)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// serverClient returns a client of the test server, checked with a PING.
func serverClient(tb testing.TB) *redis.Client {
	tb.Helper()
	c := newClient(tb, redisAddr(tb))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		tb.Fatalf("Redis at BULWARK_REDIS_ADDR does not answer: %v", err)
	}
	return c
}

// testPrefix returns a random key prefix and deletes every key under it when
// the test ends, so that runs never collide.
func testPrefix(tb testing.TB, c redis.UniversalClient) string {
	tb.Helper()
	var b [8]byte
	_, _ = rand.Read(b[:])
	prefix := "bulwarktest:" + hex.EncodeToString(b[:]) + ":"
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		for len(keys) > 0 {
			n := min(len(keys), 500)
			_ = c.Del(ctx, keys[:n]...).Err()
			keys = keys[n:]
		}
	})
	return prefix
}

// newStore returns a Store on c under a fresh prefix, reading time from clk.
func newStore(tb testing.TB, c redis.UniversalClient, clk bulwark.Clock) *Store {
	tb.Helper()
	s, err := New(Config{Client: c, Prefix: testPrefix(tb, c), TestClock: clk})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return s
}

// counter is a redis.Hook that counts the commands sent to the server, each
// one round trip.
type counter struct{ n atomic.Int64 }

func (h *counter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// isNetError reports whether err comes from the network rather than from the
// store's logic.
func isNetError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}
