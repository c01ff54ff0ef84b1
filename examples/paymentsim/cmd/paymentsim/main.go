// Command paymentsim serves the simulated payment provider on its own:
//
//	go run ./examples/paymentsim/cmd/paymentsim -listen 127.0.0.1:9000
//	go run ./examples/paymentsim/cmd/paymentsim -listen 127.0.0.1:9000 -fail-rate 0.3 -latency 50ms
//
// It charges once per Idempotency-Key (POST /charges) and lists every charge
// it made (GET /charges?limit=&starting_after=), so that double charges can
// be audited from outside:
//
//	curl -s 'localhost:9000/charges?limit=1000' | jq '.data | group_by(.order_id) | map(select(length > 1))'
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/bulwark-go/bulwark/examples/paymentsim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "paymentsim:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends. It writes "listening on <addr>" to out once it
// accepts connections.
func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("paymentsim", flag.ContinueOnError)
	fs.SetOutput(out)
	listen := fs.String("listen", "127.0.0.1:9000", "address to serve on")
	seed := fs.Uint64("seed", 1, "seed of the random failures")
	failRate := fs.Float64("fail-rate", 0, "share of charges, in [0, 1], answered 503 without charging")
	latency := fs.Duration("latency", 0, "added to every charge")
	decline := fs.Bool("decline", false, "decline every charge with 402")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *failRate < 0 || *failRate > 1 || *latency < 0 {
		return errors.New("-fail-rate must be in [0, 1] and -latency not negative")
	}
	p := paymentsim.New(*seed)
	p.SetFault(paymentsim.Fault{FailRate: *failRate, Latency: *latency, Decline: *decline})
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	fmt.Fprintf(out, "listening on %s\n", l.Addr())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}
