// Command orderservice runs the example order API.
//
//	go run ./examples/orderservice/cmd/orderservice -listen :8081
//
// With no flags it needs nothing installed: orders and idempotency keys live in
// memory and a simulated payment provider runs in the process. For a fleet,
// share PostgreSQL (and Redis or PostgreSQL for the keys):
//
//	go run ./examples/orderservice/cmd/orderservice -postgres postgres://… -idempotency redis -redis 127.0.0.1:6379 -payments http://…
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/bulwark-go/bulwark/examples/internal/telemetry"
	"github.com/bulwark-go/bulwark/examples/orderservice"
	"github.com/bulwark-go/bulwark/examples/paymentsim"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/pgstore"
	"github.com/bulwark-go/bulwark/idempotency/redisstore"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "orderservice:", err)
		os.Exit(1)
	}
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:8081", "address to serve on")
	name := flag.String("name", "orders", "instance name in logs and metrics")
	partitions := flag.Int("partitions", 8, "order partitions (consistent hash of the customer)")
	pgURL := flag.String("postgres", "", "PostgreSQL URL for orders (empty: in memory)")
	idemKind := flag.String("idempotency", "memory", "idempotency store: memory, redis or postgres")
	redisAddr := flag.String("redis", "127.0.0.1:6379", "Redis address for -idempotency redis")
	payments := flag.String("payments", "", "payment provider base URL (empty: a simulated one in this process)")
	drainDelay := flag.Duration("drain-delay", 5*time.Second, "how long readiness fails before shutdown starts")
	flag.Parse()

	tel, err := telemetry.New(*name, os.Stderr, slog.LevelInfo)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var repo orderservice.Repository
	var pool *pgxpool.Pool
	if *pgURL != "" || *idemKind == "postgres" {
		if *pgURL == "" {
			return errors.New("-idempotency postgres needs -postgres")
		}
		if pool, err = pgxpool.New(ctx, *pgURL); err != nil {
			return err
		}
		defer pool.Close()
	}
	if *pgURL != "" {
		if repo, err = orderservice.NewPostgresRepository(ctx, pool, "orders"); err != nil {
			return err
		}
	} else if repo, err = orderservice.NewMemoryRepository(*partitions); err != nil {
		return err
	}

	var store idempotency.Store
	switch *idemKind {
	case "memory":
	case "redis":
		rdb := redis.NewClient(&redis.Options{Addr: *redisAddr, ContextTimeoutEnabled: true})
		defer rdb.Close()
		if store, err = redisstore.New(redisstore.Config{Client: rdb}); err != nil {
			return err
		}
	case "postgres":
		ps, err := pgstore.New(pgstore.Config{Pool: pool, Observer: tel.Observer})
		if err != nil {
			return err
		}
		if err := ps.Migrate(ctx); err != nil {
			return err
		}
		go ps.RunReaper(ctx)
		store = ps
	default:
		return fmt.Errorf("unknown -idempotency %q: want memory, redis or postgres", *idemKind)
	}

	if *payments == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		psrv := &http.Server{Handler: paymentsim.New(1), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = psrv.Serve(l) }()
		defer psrv.Close()
		*payments = "http://" + l.Addr().String()
		tel.Logger.Info("simulated payment provider", "url", *payments)
	}

	svc, err := orderservice.New(orderservice.Config{
		Name: *name, Repository: repo, Partitions: *partitions, IdempotencyStore: store,
		PaymentURL: *payments, Observer: tel.Observer, Logger: tel.Logger,
	})
	if err != nil {
		return err
	}
	svc.Start(context.Background())
	defer svc.Close()

	mux := http.NewServeMux()
	mux.Handle("/metrics", tel.MetricsHandler())
	mux.Handle("/", tel.Middleware(svc.Handler()))
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	tel.Logger.Info("order service serving", "listen", *listen)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	svc.Drain()
	time.Sleep(*drainDelay) // load balancers notice the failing readiness
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return tel.Close(context.Background())
}
