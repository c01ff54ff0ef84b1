// The smoke program of github.com/bulwark-go/bulwark/ratelimit/redisrate,
// built and run by releasecheck from a fresh module. It makes a fleet-wide
// limiter and the HTTP middleware over it; neither connects.
package main

import (
	"fmt"
	"net/http"
	"os"

	"github.com/redis/go-redis/v9"

	"github.com/bulwark-go/bulwark/ratelimit"
	"github.com/bulwark-go/bulwark/ratelimit/redisrate"
)

func main() {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ContextTimeoutEnabled: true})
	defer client.Close()
	lim, err := redisrate.New(redisrate.Config{Client: client, Rate: 100, Burst: 20, FailOpen: true})
	check(err)
	_, err = ratelimit.Middleware(ratelimit.HTTPConfig{
		Limiter: lim,
		Key:     func(r *http.Request) string { return r.Header.Get("X-Api-Key") },
	})
	check(err)
	fmt.Println("redisrate: a fleet-wide limiter behind the rate-limit middleware")
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
