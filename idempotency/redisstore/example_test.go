package redisstore_test

import (
	"context"
	"fmt"
	"time"

	"github.com/bulwark-go/bulwark/idempotency/redisstore"
	"github.com/redis/go-redis/v9"
)

// This example needs a Redis server, so it is compiled but not run; the
// package's tests run the same steps against BULWARK_REDIS_ADDR.
func Example() {
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                 []string{"127.0.0.1:6379"},
		ContextTimeoutEnabled: true, // required: ctx deadlines bound each call
	})
	defer rdb.Close()
	store, err := redisstore.New(redisstore.Config{Client: rdb, Prefix: "orders:idem:"})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := store.Claim(ctx, "order-7f3a", []byte("sha256 of the request"), 30*time.Second)
	switch {
	case err != nil:
		fmt.Println("store unavailable:", err)
	case c.Won:
		err := store.Complete(ctx, "order-7f3a", c.Token, []byte(`{"order":42}`), 24*time.Hour)
		fmt.Println("ran the request:", err)
	case c.Record.Completed:
		fmt.Printf("replayed %s\n", c.Record.Value)
	default:
		fmt.Println("in flight elsewhere; retry later")
	}
}
