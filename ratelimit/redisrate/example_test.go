package redisrate_test

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/bulwark-go/bulwark/ratelimit"
	"github.com/bulwark-go/bulwark/ratelimit/redisrate"
	"github.com/redis/go-redis/v9"
)

// This example needs a Redis server, so it is compiled but not run; the
// package's tests run the same steps against BULWARK_REDIS_ADDR.
func Example() {
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                 []string{"127.0.0.1:6379"},
		ContextTimeoutEnabled: true, // required: the Timeout bounds each call
	})
	defer rdb.Close()
	// Each instance keeps a local share of the limit for when Redis is down.
	local, err := ratelimit.NewGroup(ratelimit.GroupConfig{Limit: ratelimit.Config{Rate: 25, Burst: 5}})
	if err != nil {
		fmt.Println(err)
		return
	}
	lim, err := redisrate.New(redisrate.Config{
		Client: rdb, Prefix: "api:rl:", Name: "per-key",
		Rate: 100, Burst: 20, Timeout: 50 * time.Millisecond,
		Fallback: local,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	r, err := lim.Take(context.Background(), "key-7f3a", 1)
	fmt.Println(r.Allowed, r.Remaining, err)

	mw, err := ratelimit.Middleware(ratelimit.HTTPConfig{
		Limiter: lim,
		Key:     func(r *http.Request) string { return r.Header.Get("X-Api-Key") },
		Headers: true,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = mw(http.NotFoundHandler())
}
