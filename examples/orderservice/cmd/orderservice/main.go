// Command orderservice runs the example order API.
//
//	go run ./examples/orderservice/cmd/orderservice -listen 127.0.0.1:8081 -api-key ann=ann-key-0123456789
//
// With no store flags it needs nothing installed: orders and idempotency keys
// live in memory and a simulated payment provider runs in the process. For a
// fleet, share PostgreSQL (and Redis or PostgreSQL for the keys; with both in
// PostgreSQL, a create's order and its key's completion commit in one
// transaction):
//
//	go run ./examples/orderservice/cmd/orderservice -postgres postgres://… -idempotency redis -redis 127.0.0.1:6379 -payments http://… -api-keys keys.txt
//
// Every API request needs an API key ("Authorization: Bearer <key>"),
// which names its tenant. Each tenant may send -rate-limit requests a second
// to an instance (429 past it); an adaptive concurrency limit (-limit) sheds
// the excess of an overloaded instance with 503, reports first (-limit-rules,
// -limit-headroom), and keeps a tenant to -limit-tenant-share of it (429). Keys come from -api-key tenant=key (repeatable) and
// from -api-keys, a file with one tenant=key a line (blank lines and lines
// starting with # are skipped). With neither, the command makes up a key for
// the tenant "demo" and logs it.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/examples/internal/telemetry"
	"github.com/bulwark-go/bulwark/examples/orderservice"
	"github.com/bulwark-go/bulwark/examples/paymentsim"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/pgstore"
	"github.com/bulwark-go/bulwark/idempotency/redisstore"
	"github.com/bulwark-go/bulwark/limit"
	"github.com/bulwark-go/bulwark/ratelimit"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "orderservice:", err)
		os.Exit(1)
	}
}

// apiKeys is the value of the repeatable -api-key flag.
type apiKeys map[string]string

func (k apiKeys) String() string { return fmt.Sprintf("%d keys", len(k)) }

func (k apiKeys) Set(v string) error { return k.add(v) }

// add adds one "tenant=key" pair.
func (k apiKeys) add(v string) error {
	tenant, key, ok := strings.Cut(v, "=")
	if !ok || tenant == "" {
		return errors.New("want tenant=key")
	}
	if !orderservice.ValidAPIKey(key) {
		return fmt.Errorf("the key of tenant %q must be 16 to 256 visible ASCII characters", tenant)
	}
	if t, dup := k[key]; dup && t != tenant {
		return fmt.Errorf("one key is given to tenants %q and %q", t, tenant)
	}
	k[key] = tenant
	return nil
}

// readFile adds the pairs of a key file: one tenant=key a line.
func (k apiKeys) readFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := k.add(line); err != nil {
			return fmt.Errorf("%s:%d: %w", name, n, err) // the line is not repeated: it may hold a key
		}
	}
	return sc.Err()
}

// limiter returns the Limiter of the -limit flag: an adaptive limit.Limiter,
// a fixed limit.Bulkhead of n, or none (off, reported as true).
func limiter(flag, name string, headroom, tenantShare float64, obs bulwark.Observer) (limit.Acquirer, bool, error) {
	switch flag {
	case "off":
		return nil, true, nil
	case "adaptive":
		l, err := limit.New(limit.Config{Name: name, Headroom: headroom, TenantShare: tenantShare, Observer: obs})
		if err != nil {
			return nil, false, fmt.Errorf("-limit adaptive: %w", err)
		}
		return l, false, nil
	}
	n, err := strconv.Atoi(flag)
	if err != nil {
		return nil, false, fmt.Errorf(`-limit %q: want "adaptive", a number or "off"`, flag)
	}
	b, err := limit.NewBulkhead(limit.BulkheadConfig{Name: name, Limit: n, Headroom: headroom, TenantShare: tenantShare, Observer: obs})
	if err != nil {
		return nil, false, fmt.Errorf("-limit %d: %w", n, err)
	}
	return b, false, nil
}

// run runs the service until ctx ends, then drains and shuts it down.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("orderservice", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "address to serve on")
	name := fs.String("name", "orders", "instance name in logs and metrics")
	partitions := fs.Int("partitions", 8, "order partitions (consistent hash of the customer)")
	pgURL := fs.String("postgres", "", "PostgreSQL URL for orders (empty: in memory)")
	table := fs.String("table", "orders", "PostgreSQL table of the orders")
	idemKind := fs.String("idempotency", "memory", "idempotency store: memory, redis or postgres")
	idemTable := fs.String("idempotency-table", "", "PostgreSQL table of the idempotency keys (empty: pgstore's default)")
	redisAddr := fs.String("redis", "127.0.0.1:6379", "Redis address for -idempotency redis")
	redisPrefix := fs.String("redis-prefix", "", "prefix of the Redis keys (empty: redisstore's default)")
	payments := fs.String("payments", "", "payment provider base URL (empty: a simulated one in this process)")
	lease := fs.Duration("lease", 10*time.Second, "how long a create holds its idempotency key")
	drainDelay := fs.Duration("drain-delay", 5*time.Second, "how long readiness fails before shutdown starts")
	concurrency := fs.String("limit", "adaptive", `concurrency limit of the API: "adaptive" (follows the latency), a number (a fixed limit), or "off"`)
	headroom := fs.Float64("limit-headroom", orderservice.DefaultHeadroom,
		"share of the limit kept from normal requests for critical ones (twice that from sheddable ones), in [0, 0.5)")
	tenantShare := fs.Float64("limit-tenant-share", 0.5, "largest share of the limit one tenant may hold (1: no bound)")
	rules := fs.String("limit-rules", orderservice.DefaultRules, `criticality rules, "[METHOD] PATH-PREFIX = critical|normal|sheddable", comma-separated, first match wins`)
	rate := fs.Int("rate-limit", 200, "requests a second each tenant may send to this instance (0: no rate limit)")
	burst := fs.Int("rate-burst", 0, "requests a tenant may send at once after a quiet spell (0: one second's worth)")
	payTimeout := fs.Duration("payment-timeout", 5*time.Second, "bound of a charge, retries included")
	attemptTimeout := fs.Duration("payment-attempt-timeout", 2*time.Second, "bound of each attempt of a charge")
	reportTimeout := fs.Duration("report-timeout", 5*time.Second, "bound of a report's query")
	keys := apiKeys{}
	fs.Var(keys, "api-key", "an API key, as tenant=key (repeatable)")
	keyFile := fs.String("api-keys", "", "file of API keys, one tenant=key a line")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keyFile != "" {
		if err := keys.readFile(*keyFile); err != nil {
			return fmt.Errorf("-api-keys: %w", err)
		}
	}

	tel, err := telemetry.New(*name, stderr, slog.LevelInfo)
	if err != nil {
		return err
	}
	defer tel.Close(context.Background())
	lim, noLimit, err := limiter(*concurrency, *name, *headroom, *tenantShare, tel.Observer)
	if err != nil {
		return err
	}
	critRules, err := limit.ParseRules(*rules)
	if err != nil {
		return fmt.Errorf("-limit-rules: %w", err)
	}
	if len(keys) == 0 {
		var b [16]byte
		_, _ = rand.Read(b[:])
		key := "demo-" + hex.EncodeToString(b[:])
		keys[key] = "demo"
		tel.Logger.Warn("no -api-key or -api-keys: made up an API key for tenant demo", "api_key", key)
	}

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
		pr, err := orderservice.NewPostgresRepository(pool, *table)
		if err != nil {
			return err
		}
		if err := pr.Migrate(ctx); err != nil {
			return err
		}
		repo = pr
	} else if repo, err = orderservice.NewMemoryRepository(*partitions); err != nil {
		return err
	}

	var store idempotency.Store
	var inTx orderservice.TxCompleter // keys completed in the orders' transaction
	switch *idemKind {
	case "memory":
	case "redis":
		rdb := redis.NewClient(&redis.Options{Addr: *redisAddr, ContextTimeoutEnabled: true})
		defer rdb.Close()
		if store, err = redisstore.New(redisstore.Config{Client: rdb, Prefix: *redisPrefix}); err != nil {
			return err
		}
	case "postgres":
		ps, err := pgstore.New(pgstore.Config{Pool: pool, Table: *idemTable, Observer: tel.Observer})
		if err != nil {
			return err
		}
		if err := ps.Migrate(ctx); err != nil {
			return err
		}
		if err := ps.Start(context.Background()); err != nil {
			return err
		}
		defer ps.Close()
		store, inTx = ps, ps // the keys share the orders' database

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
		Name: *name, Repository: repo, Partitions: *partitions, IdempotencyStore: store, CompleteInTx: inTx, APIKeys: keys,
		Lease: *lease, PaymentURL: *payments, Observer: tel.Observer, Logger: tel.Logger,
		Limiter: lim, NoShedding: noLimit, Rules: critRules, RateLimit: ratelimit.Config{Rate: *rate, Burst: *burst},
		PaymentTimeout: *payTimeout, PaymentAttemptTimeout: *attemptTimeout, ReportTimeout: *reportTimeout,
	})
	if err != nil {
		return err
	}
	svc.Start(context.Background())
	defer svc.Close()

	mux := http.NewServeMux()
	mux.Handle("/metrics", tel.MetricsHandler())
	mux.Handle("/", tel.Middleware(svc.Handler()))
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	tel.Logger.Info("order service serving", "listen", l.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	svc.Drain()
	tel.Logger.Info("draining", "delay", *drainDelay)
	time.Sleep(*drainDelay) // load balancers notice the failing readiness
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	return nil
}
