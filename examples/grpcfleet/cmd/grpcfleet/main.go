// Command grpcfleet runs bulwark's gRPC path under faults and prints what the
// client saw:
//
//	go run ./examples/grpcfleet/cmd/grpcfleet -duration 5s
//
// It exits 1 if an invariant broke: a read or a keyed reservation failed as
// the client saw it, or a key was reserved more than once.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/bulwark-go/bulwark/examples/grpcfleet"
)

func main() {
	var cfg grpcfleet.Config
	flag.DurationVar(&cfg.Duration, "duration", 0, "how long the load runs (default 3s)")
	flag.IntVar(&cfg.Workers, "workers", 0, "concurrent clients (default 8)")
	flag.DurationVar(&cfg.SlowBy, "slow", 0, "latency added to the slowed server (default 50ms)")
	flag.Uint64Var(&cfg.Seed, "seed", 0, "random seed (default 1)")
	flag.Parse()
	rep, err := grpcfleet.Run(context.Background(), cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcfleet:", err)
		os.Exit(2)
	}
	fmt.Println(rep)
	if broken := rep.Broken(); len(broken) > 0 {
		for _, b := range broken {
			fmt.Fprintln(os.Stderr, "grpcfleet: invariant broken:", b)
		}
		os.Exit(1)
	}
	fmt.Println("all invariants hold")
}
