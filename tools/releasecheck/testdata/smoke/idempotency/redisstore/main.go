// The smoke program of github.com/bulwark-go/bulwark/idempotency/redisstore,
// built and run by releasecheck from a fresh module. It makes a store and an
// engine on it; neither connects.
package main

import (
	"fmt"
	"os"

	"github.com/redis/go-redis/v9"

	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/redisstore"
)

func main() {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ContextTimeoutEnabled: true})
	defer client.Close()
	store, err := redisstore.New(redisstore.Config{Client: client})
	check(err)
	_, err = idempotency.New(idempotency.Config{Store: store})
	check(err)
	fmt.Println("redisstore: an engine on a Redis store")
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
