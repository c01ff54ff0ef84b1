package redisrate

import (
	"context"
	"testing"
	"time"
)

// FuzzKey feeds arbitrary keys, binary ones included, to a Limiter on the
// real server: each key has its own bucket under Prefix + key.
func FuzzKey(f *testing.F) {
	rdb := serverClient(f)
	l := newLimiter(f, rdb, Config{Rate: 1, Period: time.Hour, Burst: 1})
	for _, s := range []string{"tenant-1", "", "{tag}", "\x00\xff", "a:b:*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		ctx := context.Background()
		defer rdb.Del(ctx, l.prefix+key)
		if r, err := l.Take(ctx, key, 1); err != nil || !r.Allowed {
			t.Fatalf("first Take(%q) = %+v, %v", key, r, err)
		}
		if r, err := l.Take(ctx, key, 1); err != nil || r.Allowed {
			t.Fatalf("second Take(%q) = %+v, %v; want refused", key, r, err)
		}
		if n, err := rdb.Exists(ctx, l.prefix+key).Result(); err != nil || n != 1 {
			t.Fatalf("key %q not stored under Prefix + key: %d, %v", key, n, err)
		}
	})
}
