package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/examples/orderservice"
	"github.com/bulwark-go/bulwark/examples/paymentsim"
	"github.com/bulwark-go/bulwark/examples/proxy"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/retry"
)

// apiKey is the tour clients' API key.
const apiKey = "tour-client-key-0123456789"

type options struct {
	duration time.Duration
	workers  int
	seed     uint64
	out      io.Writer
	logger   *slog.Logger
}

// world is everything the tour runs: a payment provider, three order-service
// backends sharing a repository and an idempotency store, and the proxy.
type world struct {
	payments *paymentsim.Provider
	paySrv   *server
	repo     *orderservice.MemoryRepository
	store    *idempotency.MemoryStore
	backends []*backend
	proxy    *proxy.Proxy
	front    *server
	tally    *tally
}

// server is an http.Server on a loopback address that can be killed and
// brought back on the same address.
type server struct {
	addr    string
	handler http.Handler
	mu      sync.Mutex // guards srv
	srv     *http.Server
}

func listen(h http.Handler) (*server, error) {
	s := &server{handler: h}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.addr = l.Addr().String()
	s.serve(l)
	return s, nil
}

func (s *server) serve(l net.Listener) {
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 5 * time.Second}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
}

// kill closes the listener and every connection at once, as a crashed host
// would; requests being handled are cut off from their clients.
func (s *server) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		_ = s.srv.Close()
		s.srv = nil
	}
}

// revive serves again on the same address.
func (s *server) revive() error {
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		return err
	}
	s.serve(l)
	return nil
}

func (s *server) url() string { return "http://" + s.addr }

// backend is one order-service instance behind the proxy.
type backend struct {
	name string
	zone string
	svc  *orderservice.Service
	srv  *server
	slow atomic.Int64 // extra latency per request, in nanoseconds
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if d := time.Duration(b.slow.Load()); d > 0 && r.URL.Path != "/readyz" {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	b.svc.Handler().ServeHTTP(w, r)
}

func build(ctx context.Context, opt options) (*world, error) {
	w := &world{tally: newTally()}
	obs := bulwark.Observers(w.tally, bulwark.SlogObserver(opt.logger))

	w.payments = paymentsim.New(opt.seed)
	var err error
	if w.paySrv, err = listen(w.payments); err != nil {
		return nil, err
	}
	if w.repo, err = orderservice.NewMemoryRepository(8); err != nil {
		return nil, err
	}
	if w.store, err = idempotency.NewMemoryStore(idempotency.MemoryConfig{}); err != nil {
		return nil, err
	}
	budget, err := retry.NewBudget(retry.BudgetConfig{})
	if err != nil {
		return nil, err
	}
	var eps []bulwark.Endpoint
	for i, zone := range []string{"a", "a", "b"} {
		b := &backend{name: fmt.Sprintf("orders-%d", i+1), zone: zone}
		b.svc, err = orderservice.New(orderservice.Config{
			Name: b.name, Repository: w.repo, Partitions: 8, IdempotencyStore: w.store, APIKeys: map[string]string{apiKey: "tour"},
			PaymentURL: w.paySrv.url(), PaymentBudget: budget, ReadModelInterval: 100 * time.Millisecond,
			Observer: obs, Logger: opt.logger,
		})
		if err != nil {
			return nil, err
		}
		b.svc.Start(ctx)
		if b.srv, err = listen(b); err != nil {
			return nil, err
		}
		w.backends = append(w.backends, b)
		eps = append(eps, bulwark.Endpoint{Addr: b.srv.addr, Zone: zone})
	}
	w.proxy, err = proxy.New(proxy.Config{
		Name: "edge", Backends: eps, Algorithm: balancer.PeakEWMA, Zone: "a",
		CheckInterval: 500 * time.Millisecond, EjectionTime: 3 * time.Second, Observer: obs, Logger: opt.logger,
	})
	if err != nil {
		return nil, err
	}
	if err := w.proxy.Start(ctx); err != nil {
		return nil, err
	}
	if w.front, err = listen(w.proxy.Handler()); err != nil {
		return nil, err
	}
	return w, nil
}

// close stops everything, the proxy first.
func (w *world) close() error {
	var errs []error
	if w.front != nil {
		w.front.kill()
	}
	if w.proxy != nil {
		errs = append(errs, w.proxy.Close())
	}
	for _, b := range w.backends {
		b.srv.kill()
		errs = append(errs, b.svc.Close())
	}
	if w.paySrv != nil {
		w.paySrv.kill()
	}
	if w.store != nil {
		errs = append(errs, w.store.Close())
	}
	return errors.Join(errs...)
}
