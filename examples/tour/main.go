// Command tour runs bulwark's examples together on loopback, under injected
// faults, and checks that the guarantees hold:
//
//	go run ./examples/tour                  # about 30 s
//	go run ./examples/tour -duration 40s -seed 7 -v
//
// Three order-service instances (two in zone a, one in zone b), each an OS
// process (the tour's own binary run again), share one order repository and
// one idempotency store, which the tour process keeps in memory and serves to
// them over HTTP, as a fleet shares PostgreSQL and Redis; each reaches the
// orders through a pool of connections, its capacity, which its adaptive
// limit protects by shedding, reports first. A reverse proxy in zone a
// balances them with Peak-EWMA, health checks, outlier ejection, per-backend
// breakers and budgeted retries; the order service pays through a simulated
// payment provider under timeouts, retry and a circuit breaker. Clients of
// three tenants create orders with idempotency keys (and resend duplicates,
// concurrently), read them, pay, ship and cancel them with If-Match, list
// them from the lagging read model and ask for reports, while the timeline
// kills an instance with SIGKILL and restarts it, slows another, takes the
// payment provider down, lets everything recover, and then overloads the
// fleet with three times the normal load. Afterwards, pending payments are
// resumed and the provider's charges are audited through its GET /charges
// listing. Then the gRPC path runs (examples/grpcfleet): three inventory
// servers behind bulwark's grpc-go balancer, one killed and restarted and
// another slowed, with keyed reservations that the servers' idempotency
// interceptor replays; its figures are printed beside the HTTP ones.
//
// The tour exits non-zero if an invariant breaks: an idempotent request (a
// GET, or a create with its key) failed as seen by the client, other than
// refused by a limit with Retry-After (an instance's, or the proxy's limit
// of its backends); a key made more than one order, or an
// order exists without its key; an order was charged twice, or the charges
// and the paid orders differ; a payment stays pending; a shipped order has
// no charge; on the gRPC path, a read or a keyed reservation failed, or a key
// was executed more than once.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/bulwark-go/bulwark/examples/grpcfleet"
)

func main() {
	if os.Getenv(roleEnv) == "orderservice" {
		if err := serveOrders(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "tour orderservice:", err)
			os.Exit(1)
		}
		return
	}
	duration := flag.Duration("duration", 20*time.Second, "how long the load runs (the faults are spread over it)")
	workers := flag.Int("workers", 8, "concurrent clients")
	seed := flag.Uint64("seed", 1, "random seed of the clients and the payment provider")
	verbose := flag.Bool("v", false, "log the components' events to stderr")
	flag.Parse()

	var logs io.Writer = io.Discard
	if *verbose {
		logs = os.Stderr
	}
	rep, err := run(context.Background(), options{
		duration: *duration, workers: *workers, seed: *seed, out: os.Stdout, logs: logs, dbConns: 4,
		logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "tour:", err)
		os.Exit(2)
	}
	broken := rep.broken()

	// The gRPC path: three inventory servers behind bulwark's grpc-go
	// balancer, one killed and restarted, another slowed, with keyed
	// reservations replayed by the servers' idempotency interceptor.
	fmt.Println()
	fmt.Println("gRPC path (examples/grpcfleet): one of three servers killed and restarted, another slowed")
	grep, err := grpcfleet.Run(context.Background(), grpcfleet.Config{
		Duration: max(*duration/4, 3*time.Second), Workers: *workers, SlowBy: 50 * time.Millisecond, Seed: *seed,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "tour: grpc:", err)
		os.Exit(2)
	}
	fmt.Println(grep)
	for _, b := range grep.Broken() {
		broken = append(broken, "grpc: "+b)
	}

	if len(broken) > 0 {
		for _, b := range broken {
			fmt.Fprintln(os.Stderr, "tour: invariant broken:", b)
		}
		os.Exit(1)
	}
	fmt.Println("all invariants hold")
}
