package deploy_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/discovery"
	"github.com/bulwark-go/bulwark/examples/internal/telemetry"
	"github.com/bulwark-go/bulwark/examples/orderservice"
	"github.com/bulwark-go/bulwark/examples/paymentsim"
	"github.com/bulwark-go/bulwark/examples/proxy"
	"github.com/bulwark-go/bulwark/fallback"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/limit"
	"github.com/bulwark-go/bulwark/ratelimit"
	"github.com/bulwark-go/bulwark/ratelimit/redisrate"
	"github.com/bulwark-go/bulwark/retry"
	"github.com/bulwark-go/bulwark/throttle"
	"github.com/bulwark-go/bulwark/timeout"
)

// flakyStore is an idempotency store that fails while down is set.
type flakyStore struct {
	idempotency.Store
	down atomic.Bool
}

var errStoreDown = errors.New("store unreachable")

func (f *flakyStore) Claim(ctx context.Context, key string, fp []byte, lease time.Duration) (idempotency.Claim, error) {
	if f.down.Load() {
		return idempotency.Claim{}, errStoreDown
	}
	return f.Store.Claim(ctx, key, fp, lease)
}

// TestServicesExportDashboardMetrics starts the example services — three
// order-service instances sharing a repository and an idempotency store, a
// payment provider, and the proxy in front of three backends — with their
// real /metrics endpoints, drives them through the situations the dashboard
// and the alerts are about (duplicates, a reused key, a lease takeover, a
// payment outage, a store outage, dying backends, panic mode, slow reads that
// get hedged), adds the limits, rate limits, throttle, timeouts, fallback and
// discovery that the services do not all use yet (exerciseLimits,
// exerciseDiscovery), scrapes both /metrics endpoints, and checks that every
// metric and label the dashboard and the alert rules use is really exported.
func TestServicesExportDashboardMetrics(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	ordersTel, err := telemetry.New("orders", io.Discard, slog.LevelInfo)
	require.NoError(t, err)
	defer ordersTel.Close(context.Background())
	proxyTel, err := telemetry.New("proxy", io.Discard, slog.LevelInfo)
	require.NoError(t, err)
	defer proxyTel.Close(context.Background())

	payments := paymentsim.New(1)
	paySrv := httptest.NewServer(payments)
	defer paySrv.Close()

	repo, err := orderservice.NewMemoryRepository(4)
	require.NoError(t, err)
	storeClk := bulwarktest.NewClock(time.Now())
	mem, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{Clock: storeClk})
	require.NoError(t, err)
	defer mem.Close()
	store := &flakyStore{Store: mem}
	// A budget this small is exhausted by the payment outage below.
	budget, err := retry.NewBudget(retry.BudgetConfig{Ratio: 0.01, MinPerSecond: 0.01})
	require.NoError(t, err)

	const apiKey = "deploy-test-key-0123456789"
	apiKeys := map[string]string{apiKey: "acme"}
	// Three instances; the third answers slowly, so that hedged reads fire.
	var slowDelay atomic.Int64
	slowDelay.Store(int64(30 * time.Millisecond))
	var instances []*httptest.Server
	for _, name := range []string{"orders-a", "orders-b", "orders-slow"} {
		svc, err := orderservice.New(orderservice.Config{
			Name: name, Repository: repo, Partitions: 4, IdempotencyStore: store, IdempotencyWait: -1, APIKeys: apiKeys,
			PaymentURL: paySrv.URL, PaymentBudget: budget, Observer: ordersTel.Observer, Logger: quiet,
			PaymentClient: &http.Client{Timeout: 2 * time.Second, Transport: ordersTel.Transport(nil)},
		})
		require.NoError(t, err)
		svc.Start(ctx)
		defer svc.Close()
		mux := http.NewServeMux()
		mux.Handle("/metrics", ordersTel.MetricsHandler())
		h := svc.Handler()
		if name == "orders-slow" {
			h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/readyz" {
					time.Sleep(time.Duration(slowDelay.Load())) // its service time
				}
				svc.Handler().ServeHTTP(w, r)
			})
		}
		mux.Handle("/", ordersTel.Middleware(h))
		srv := httptest.NewServer(mux)
		defer srv.Close()
		instances = append(instances, srv)
	}
	a, b := instances[0].URL, instances[1].URL

	slow := instances[2]
	var eps []bulwark.Endpoint
	for _, u := range []string{a, b, slow.URL} { // the proxy balances all three
		eps = append(eps, bulwark.Endpoint{Addr: strings.TrimPrefix(u, "http://")})
	}
	p, err := proxy.New(proxy.Config{
		Backends: eps, Algorithm: balancer.RoundRobin, CheckInterval: 100 * time.Millisecond,
		HedgeDelay: 5 * time.Millisecond, Observer: proxyTel.Observer, Logger: quiet,
	})
	require.NoError(t, err)
	require.NoError(t, p.Start(ctx))
	defer p.Close()
	pmux := http.NewServeMux()
	pmux.Handle("/metrics", proxyTel.MetricsHandler())
	pmux.Handle("/", proxyTel.Middleware(p.Handler()))
	front := httptest.NewServer(pmux)
	defer front.Close()

	client := &http.Client{Timeout: 10 * time.Second}
	send := func(method, url, key string, body []byte) int {
		t.Helper()
		req, err := http.NewRequest(method, url, bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	order := func(qty string) []byte {
		return []byte(`{"customer":"ann","currency":"EUR","items":[{"sku":"a","quantity":` + qty + `,"price_cents":100}]}`)
	}
	createdID := func(key string) string {
		req, _ := http.NewRequest(http.MethodPost, a+"/orders", bytes.NewReader(order("1")))
		req.Header.Set("Idempotency-Key", key)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusCreated, resp.StatusCode)
		return strings.TrimPrefix(resp.Header.Get("Location"), "/orders/")
	}

	// Creates through the proxy, a replay, a reused key, a missing key.
	require.Equal(t, http.StatusCreated, send(http.MethodPost, front.URL+"/orders", "k1", order("1")))
	require.Equal(t, http.StatusCreated, send(http.MethodPost, front.URL+"/orders", "k1", order("1")))
	require.Equal(t, http.StatusUnprocessableEntity, send(http.MethodPost, a+"/orders", "k1", order("2")))
	require.Equal(t, http.StatusBadRequest, send(http.MethodPost, a+"/orders", "", order("1")))
	for i := 0; i < 60; i++ { // reads through the proxy; the slow backend gets hedged
		send(http.MethodGet, front.URL+"/orders?customer=ann", "", nil)
	}

	// A duplicate while the first is in flight: a 409 conflict. And a lease
	// takeover: the first run outlives its lease on the store's clock, and a
	// duplicate on the other instance takes the key over.
	payments.SetFault(paymentsim.Fault{Latency: 500 * time.Millisecond})
	id := createdID("k-pay")
	before, _, _, _ := payments.Stats()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); send(http.MethodPost, a+"/orders/"+id+"/pay", "pay-1", nil) }()
	require.Eventually(t, func() bool { n, _, _, _ := payments.Stats(); return n > before }, 5*time.Second, time.Millisecond,
		"the first pay never reached the payment provider")
	require.Equal(t, http.StatusConflict, send(http.MethodPost, a+"/orders/"+id+"/pay", "pay-1", nil))
	storeClk.Advance(20 * time.Second) // past the 10 s lease, before the store's janitor runs
	send(http.MethodPost, b+"/orders/"+id+"/pay", "pay-1", nil)
	wg.Wait()

	// A payment outage: retries, give-ups, an exhausted budget, the breaker
	// opening and rejecting.
	payments.SetFault(paymentsim.Fault{FailRate: 1})
	for i := 0; i < 30; i++ {
		send(http.MethodPost, a+"/orders/"+createdID("outage-"+string(rune('a'+i%26))+string(rune('a'+i/26)))+"/pay", "", nil)
	}
	payments.SetFault(paymentsim.Fault{})

	// A store outage: creates fail closed with 503.
	store.down.Store(true)
	require.Equal(t, http.StatusServiceUnavailable, send(http.MethodPost, a+"/orders", "k-down", order("1")))
	store.down.Store(false)

	// Backends die: the slow one first (ejected, unhealthy), then b, which
	// leaves one of three: panic mode.
	slowAddr := eps[2].Addr
	slow.CloseClientConnections()
	slow.Close()
	instances[1].CloseClientConnections()
	instances[1].Close()
	require.Eventually(t, func() bool {
		send(http.MethodGet, front.URL+"/orders?customer=ann", "", nil)
		m := scrapeURL(t, front.URL+"/metrics")
		return m["bulwark_healthcheck_ejections_total"] != nil && m["bulwark_balancer_state"] != nil
	}, 10*time.Second, 20*time.Millisecond, "no ejection of %s and no panic mode", slowAddr)

	// The limits, rate limits, throttle, timeouts, fallbacks and discovery
	// that the dashboard's lower rows and their alerts are about: built here,
	// real ones, on each service's own telemetry, and driven to refuse, fail
	// and time out, so that the contract holds for every component whether
	// or not the example services use it yet. A service that does adds its
	// own series beside these.
	exerciseLimits(t, ordersTel)
	exerciseDiscovery(t, proxyTel)

	exported := scrapeURL(t, front.URL+"/metrics")
	for name, info := range scrapeURL(t, a+"/metrics") {
		if exported[name] == nil {
			exported[name] = info
			continue
		}
		for l := range info.labels {
			exported[name].labels[l] = true
		}
	}
	checkMetricsExported(t, exported, "the running services")
}

// exerciseLimits builds, on tel, a real adaptive limiter, a bulkhead, a
// rate-limit group, two fleet-wide rate limiters whose Redis does not answer
// (one fails open, the other closed), a client-side throttle, a timeout and
// a fallback, registers the limits and the throttle for their gauges, and
// drives each through what the dashboard shows: refusals of every
// criticality and of a tenant over its share, limit changes, store errors,
// throttled requests, calls that time out and values served in their place.
func exerciseLimits(t *testing.T, tel *telemetry.Telemetry) {
	t.Helper()
	ctx := context.Background()
	clk := bulwarktest.NewClock(time.Time{})

	lim, err := limit.New(limit.Config{Name: "deploy-test-api", Clock: clk, Observer: tel.Observer})
	require.NoError(t, err)
	unregister, err := tel.Metrics.RegisterLimit(bulwark.ComponentLimiter, lim.Name(), lim)
	require.NoError(t, err)
	t.Cleanup(unregister)
	crits := []limit.Criticality{limit.Sheddable, limit.Normal, limit.Critical}
	// Rounds of 100 calls against a callee whose knee is 20 calls, half of
	// them for one tenant: the limit moves, and the excess is refused.
	for range 60 {
		var ps []limit.Permit
		for i := range 100 {
			c := limit.WithCriticality(ctx, crits[i%3])
			if i%2 == 0 {
				c = limit.WithTenant(c, "acme")
			}
			if p, err := lim.Acquire(c); err == nil {
				ps = append(ps, p)
			}
		}
		lat := 10 * time.Millisecond
		if len(ps) > 20 {
			lat = lat * time.Duration(len(ps)) / 20
		}
		clk.Advance(lat)
		for i := range ps {
			ps[i].Done(nil)
		}
	}
	require.Positive(t, lim.Baseline(), "the limiter measured no baseline")

	db, err := limit.NewBulkhead(limit.BulkheadConfig{Name: "deploy-test-db", Limit: 1, Observer: tel.Observer})
	require.NoError(t, err)
	unregister, err = tel.Metrics.RegisterLimit(bulwark.ComponentBulkhead, db.Name(), db)
	require.NoError(t, err)
	t.Cleanup(unregister)
	hold, err := db.Acquire(ctx)
	require.NoError(t, err)
	_, err = db.Acquire(limit.WithCriticality(ctx, limit.Critical))
	require.ErrorIs(t, err, limit.ErrRejected)
	hold.Done(nil)

	tenants, err := ratelimit.NewGroup(ratelimit.GroupConfig{Limit: ratelimit.Config{Name: "deploy-test-tenants", Rate: 1, Clock: clk, Observer: tel.Observer}})
	require.NoError(t, err)
	require.True(t, tenants.Allow("acme"))
	require.False(t, tenants.Allow("acme"))

	// A Redis that refuses connections: the fleet limiters decide without it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	for _, failOpen := range []bool{true, false} {
		fleet, err := redisrate.New(redisrate.Config{Client: rdb, Name: "deploy-test-fleet", Rate: 100, FailOpen: failOpen, Observer: tel.Observer})
		require.NoError(t, err)
		r, err := fleet.Take(ctx, "acme", 1)
		if failOpen {
			require.NoError(t, err)
			require.True(t, r.Allowed, "a fleet limiter failing open")
		} else {
			require.ErrorIs(t, err, redisrate.ErrUnavailable, "a fleet limiter failing closed")
		}
	}

	th, err := throttle.New(throttle.Config{Name: "deploy-test-payments", Clock: clk, Observer: tel.Observer,
		Random: func() float64 { return 0 }}) // refuses whenever the probability is above zero
	require.NoError(t, err)
	unregister, err = tel.Metrics.RegisterThrottle(bulwark.ComponentThrottle, "deploy-test-payments", th)
	require.NoError(t, err)
	t.Cleanup(unregister)
	errDown := errors.New("payments down")
	for range 5 {
		_ = th.Do(ctx, func(context.Context) error { return errDown })
	}
	require.Positive(t, th.Probability(), "the throttle's probability")

	attempt, err := timeout.New(timeout.Config{Name: "deploy-test-payments-attempt", Timeout: time.Second, Clock: clk, Observer: tel.Observer})
	require.NoError(t, err)
	require.NoError(t, attempt.Do(ctx, func(context.Context) error { clk.Advance(10 * time.Millisecond); return nil }))
	err = attempt.Do(ctx, func(ctx context.Context) error {
		clk.Advance(2 * time.Second) // past the deadline: the timer fires
		<-ctx.Done()
		return ctx.Err()
	})
	require.ErrorIs(t, err, timeout.ErrTimeout)

	price, err := fallback.New(fallback.Config[int]{Name: "deploy-test-price", Observer: tel.Observer,
		Func: func(context.Context, error) (int, error) { return 100, nil }})
	require.NoError(t, err)
	v, err := price.Call(ctx, th, func(context.Context) (int, error) { return 0, errDown })
	require.NoError(t, err)
	require.Equal(t, 100, v)
}

// acceptAll is a discovery.Updater that takes every set.
type acceptAll struct{}

func (acceptAll) Update([]bulwark.Endpoint) error { return nil }

// exerciseDiscovery builds, on tel, a real discovery watcher that resolves
// two endpoints, then fails: its resolutions, state, endpoints and endpoint
// changes.
func exerciseDiscovery(t *testing.T, tel *telemetry.Telemetry) {
	t.Helper()
	answers := []error{nil, errors.New("SERVFAIL")}
	w, err := discovery.New(discovery.Config{Name: "deploy-test-backends", Clock: bulwarktest.NewClock(time.Time{}), Observer: tel.Observer,
		Updater: acceptAll{},
		Resolver: discovery.ResolverFunc(func(context.Context) ([]bulwark.Endpoint, time.Duration, error) {
			err := answers[0]
			answers = answers[1:]
			return []bulwark.Endpoint{{Addr: "10.0.0.1:8080"}, {Addr: "10.0.0.2:8080"}}, 0, err
		})})
	require.NoError(t, err)
	require.NoError(t, w.Refresh(context.Background()))
	require.Error(t, w.Refresh(context.Background()))
}
