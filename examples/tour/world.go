package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/examples/orderservice"
	"github.com/bulwark-go/bulwark/examples/paymentsim"
	"github.com/bulwark-go/bulwark/examples/proxy"
	"github.com/bulwark-go/bulwark/idempotency"
)

// tenants are the tour's customers of the order service, each with its API
// key: the clients are spread over them, and the instances keep each to its
// share of their limit.
var tenants = []struct{ name, key string }{
	{"ann", "tour-ann-key-0123456789"},
	{"bob", "tour-bob-key-0123456789"},
	{"cyd", "tour-cyd-key-0123456789"},
}

// apiKeys is the instances' -api-keys flag.
func apiKeys() string {
	var pairs []string
	for _, t := range tenants {
		pairs = append(pairs, t.name+"="+t.key)
	}
	return strings.Join(pairs, ",")
}

// dbTime is the least time a query of an instance holds one of its
// connections to the shared orders (options.dbConns): with four connections,
// an instance serves 133 queries a second. Eight clients keep the two
// instances of zone a, which the proxy prefers, about two-thirds busy, and
// the overload phase asks them for about twice what they can serve.
const dbTime = 30 * time.Millisecond

// lease is how long a create holds its idempotency key: after a kill, the
// keys the dead instance held are free again this much later.
const lease = 2 * time.Second

type options struct {
	duration time.Duration
	workers  int
	seed     uint64
	out      io.Writer
	logger   *slog.Logger
	logs     io.Writer // the instances' logs
	dbConns  int       // each instance's connections to the shared orders
}

// world is everything the tour runs: a payment provider, the shared orders
// and idempotency keys, three order-service instances (processes) and the
// proxy in front of them.
type world struct {
	payments *paymentsim.Provider
	paySrv   *server
	repo     *orderservice.MemoryRepository
	store    *idempotency.MemoryStore
	stateSrv *server
	backends []*instance
	proxy    *proxy.Proxy
	upstream *http.Transport // the proxy's, to the instances
	front    *server
	tally    *tally
}

// server is an http.Server on a loopback address.
type server struct {
	addr string
	mu   sync.Mutex // guards srv
	srv  *http.Server
}

func listen(h http.Handler) (*server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &server{addr: l.Addr().String(), srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}}
	go func() { _ = s.srv.Serve(l) }()
	return s, nil
}

// close closes the listener and every connection at once.
func (s *server) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		_ = s.srv.Close()
		s.srv = nil
	}
}

func (s *server) url() string { return "http://" + s.addr }

// freeAddr returns a loopback address that nothing listens on, for an
// instance to listen on (and listen on again after a restart).
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func build(ctx context.Context, opt options) (*world, error) {
	w := &world{tally: newTally()}
	obs := bulwark.Observers(w.tally, bulwark.SlogObserver(opt.logger))

	w.payments = paymentsim.New(opt.seed)
	var err error
	if w.paySrv, err = listen(w.payments); err != nil {
		return w, err
	}
	if w.repo, err = orderservice.NewMemoryRepository(8); err != nil {
		return w, err
	}
	if w.store, err = idempotency.NewMemoryStore(idempotency.MemoryConfig{}); err != nil {
		return w, err
	}
	if w.stateSrv, err = listen(stateHandler{repo: w.repo, store: w.store}); err != nil {
		return w, err
	}
	logs := opt.logs
	if logs == nil {
		logs = io.Discard
	}
	var eps []bulwark.Endpoint
	for i, zone := range []string{"a", "a", "b"} {
		addr, err := freeAddr()
		if err != nil {
			return w, err
		}
		in := &instance{name: fmt.Sprintf("orders-%d", i+1), zone: zone, addr: addr, tally: w.tally, logs: logs}
		in.args = []string{"-listen", addr, "-name", in.name, "-state", w.stateSrv.url(), "-payments", w.paySrv.url(),
			"-lease", lease.String(), "-api-keys", apiKeys(), "-db-conns", fmt.Sprint(opt.dbConns), "-db-time", dbTime.String()}
		if err := in.start(); err != nil {
			return w, err
		}
		w.backends = append(w.backends, in)
		w.tally.name(addr, in.name)
		eps = append(eps, bulwark.Endpoint{Addr: addr, Zone: zone})
	}
	for _, in := range w.backends {
		if err := in.waitReady(30 * time.Second); err != nil {
			return w, err
		}
	}
	w.upstream = &http.Transport{
		MaxIdleConns: 512, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second, ResponseHeaderTimeout: 10 * time.Second,
	}
	w.proxy, err = proxy.New(proxy.Config{
		Name: proxyName, Backends: eps, Algorithm: balancer.PeakEWMA, Zone: "a",
		CheckInterval: 500 * time.Millisecond, EjectionTime: 3 * time.Second, Observer: obs, Logger: opt.logger,
		Transport: shedAsBusy{w.upstream}, AdaptiveEndpointLimit: true,
	})
	if err != nil {
		return w, err
	}
	if err := w.proxy.Start(ctx); err != nil {
		return w, err
	}
	if w.front, err = listen(w.proxy.Handler()); err != nil {
		return w, err
	}
	return w, nil
}

// close stops everything, the proxy first.
func (w *world) close() error {
	var errs []error
	if w.front != nil {
		w.front.close()
	}
	if w.proxy != nil {
		errs = append(errs, w.proxy.Close())
	}
	if w.upstream != nil {
		w.upstream.CloseIdleConnections()
	}
	var wg sync.WaitGroup
	for _, in := range w.backends {
		wg.Add(1)
		go func() { defer wg.Done(); in.stop() }()
	}
	wg.Wait()
	for _, s := range []*server{w.stateSrv, w.paySrv} {
		if s != nil {
			s.close()
		}
	}
	if w.store != nil {
		errs = append(errs, w.store.Close())
	}
	return errors.Join(errs...)
}

// shedAsBusy is the proxy's transport to the instances. It hands the proxy a
// request that an instance's Limiter shed (503 with the limiter's problem)
// as a 429 Too Many Requests, which the proxy retries on another instance as
// it does a 503 (at once: the instance's Retry-After holds only for a retry
// back to it), and which its limiter of the instance counts as a sign of
// overload as it does a 503, but which does not count against the instance's
// health. The proxy's balancer counts every 503 as a failure of its backend:
// under overload, the 503s of shedding open the per-backend breakers and
// eject the instances, one after the other, until the proxy has none left
// and refuses requests itself. Until the proxy tells a shed request from a
// failure, this keeps the tour's overload phase about the limits, not the
// proxy's breakers.
type shedAsBusy struct{ base http.RoundTripper }

func (t shedAsBusy) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable ||
		resp.Header.Get("Content-Type") != "application/problem+json" || resp.ContentLength < 0 || resp.ContentLength > 4096 {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if refusal(resp.StatusCode, body) {
		resp.StatusCode, resp.Status = http.StatusTooManyRequests, "429 Too Many Requests"
	}
	return resp, nil
}
