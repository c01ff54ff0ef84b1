package deploy_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/examples/internal/telemetry"
	"github.com/bulwark-go/bulwark/examples/orderservice"
	"github.com/bulwark-go/bulwark/examples/paymentsim"
	"github.com/bulwark-go/bulwark/examples/proxy"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/retry"
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

// TestServicesExportDashboardMetrics starts the example services — two
// order-service instances sharing a repository and an idempotency store, a
// payment provider, and the proxy in front of three backends — with their
// real /metrics endpoints, drives them through the situations the dashboard
// and the alerts are about (duplicates, a reused key, a lease takeover, a
// payment outage, a store outage, dying backends, panic mode, slow reads that
// get hedged), scrapes both /metrics endpoints, and checks that every metric
// and label the dashboard and the alert rules use is really exported.
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
