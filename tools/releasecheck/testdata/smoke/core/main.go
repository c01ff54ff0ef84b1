// The smoke program of github.com/bulwark-go/bulwark, built and run by
// releasecheck from a fresh module: a balancer fed by discovery, and a
// breaker composed into a policy.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/breaker"
	"github.com/bulwark-go/bulwark/discovery"
)

func main() {
	ctx := context.Background()
	lb, err := balancer.New(balancer.Config{})
	check(err)
	w, err := discovery.New(discovery.Config{
		Resolver: discovery.Static{{Addr: "10.0.0.1:80"}, {Addr: "10.0.0.2:80"}},
		Updater:  lb,
	})
	check(err)
	check(w.Refresh(ctx))
	check(w.Close())

	cb, err := breaker.New(breaker.Config{})
	check(err)
	calls := 0
	check(bulwark.Compose(cb).Do(ctx, func(context.Context) error { calls++; return nil }))
	fmt.Printf("bulwark: %d call through the breaker\n", calls)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
