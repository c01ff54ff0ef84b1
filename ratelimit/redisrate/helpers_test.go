package redisrate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/redis/go-redis/v9"
)

// testDB is the Redis database these tests use, apart from the other
// packages' tests on the same server.
const testDB = 3

// redisAddr returns the address of the test server from BULWARK_REDIS_ADDR.
// When it is unset the test skips, or fails under CI=true.
func redisAddr(tb testing.TB) string {
	tb.Helper()
	addr := os.Getenv("BULWARK_REDIS_ADDR")
	if addr == "" {
		if os.Getenv("CI") == "true" {
			tb.Fatal("BULWARK_REDIS_ADDR is unset under CI=true: the redisrate tests need a Redis server")
		}
		tb.Skip("BULWARK_REDIS_ADDR is unset: skipping the tests that need a Redis server (set it to host:port, e.g. 127.0.0.1:6379)")
	}
	return addr
}

// newClient returns a client of addr, on the test database, closed when the
// test ends.
func newClient(tb testing.TB, addr string, opts ...func(*redis.Options)) *redis.Client {
	tb.Helper()
	o := &redis.Options{Addr: addr, DB: testDB, ContextTimeoutEnabled: true}
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
	prefix := "bulwarktest:redisrate:" + hex.EncodeToString(b[:]) + ":"
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			_ = c.Del(ctx, keys...).Err()
		}
	})
	return prefix
}

// newLimiter returns a Limiter on c under a fresh prefix.
func newLimiter(tb testing.TB, c redis.UniversalClient, cfg Config) *Limiter {
	tb.Helper()
	cfg.Client = c
	if cfg.Timeout == 0 {
		// Not the default 100 ms: on a loaded machine a round trip can
		// take longer, and a test about something else would see an
		// outage. The tests of outages set their own.
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Prefix == "" {
		cfg.Prefix = testPrefix(tb, c)
	}
	l, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return l
}

// serverTime returns the server's clock.
func serverTime(tb testing.TB, c redis.UniversalClient) time.Time {
	tb.Helper()
	t, err := c.Time(context.Background()).Result()
	if err != nil {
		tb.Fatalf("TIME: %v", err)
	}
	return t
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

// recorder keeps the events it sees.
type recorder struct {
	mu  sync.Mutex
	evs []bulwark.Event
}

func (r *recorder) Observe(e bulwark.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, e)
	r.mu.Unlock()
}

func (r *recorder) events() []bulwark.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]bulwark.Event(nil), r.evs...)
}
