package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/examples/orderservice"
	"github.com/bulwark-go/bulwark/limit"
)

// roleEnv makes the tour's binary run one order-service instance instead of
// the tour: the tour starts its instances by running its own binary again,
// so that `go run ./examples/tour` needs nothing built or installed.
const roleEnv = "BULWARK_TOUR_ROLE"

// An instance process talks to the tour over its standard streams: it writes
// the components' events to stdout, one JSON object a line (and {"ready":true}
// once it serves), logs to stderr, and reads commands from stdin, one a line:
// "slow <duration>" adds latency to every request. It shuts down when stdin
// ends, so that no instance outlives the tour.

// wireEvent is a bulwark.Event on the wire, with the fields the tally reads.
type wireEvent struct {
	Ready     bool              `json:"ready,omitempty"`
	Kind      bulwark.EventKind `json:"kind,omitempty"`
	Component string            `json:"component,omitempty"`
	Name      string            `json:"name,omitempty"`
	Addr      string            `json:"addr,omitempty"`
	Attempt   int               `json:"attempt,omitempty"`
	Limit     int               `json:"limit,omitempty"`
	From      string            `json:"from,omitempty"`
	To        string            `json:"to,omitempty"`
	Reason    string            `json:"reason,omitempty"`
}

// eventWriter is an Observer that writes events to w from a goroutine of its
// own, so that Observe never blocks; an event that finds the queue full is
// dropped.
type eventWriter struct {
	ch   chan wireEvent
	done chan struct{}
}

func newEventWriter(w io.Writer) *eventWriter {
	ew := &eventWriter{ch: make(chan wireEvent, 4096), done: make(chan struct{})}
	go func() {
		defer close(ew.done)
		enc := json.NewEncoder(w)
		for e := range ew.ch {
			_ = enc.Encode(e)
		}
	}()
	return ew
}

func (ew *eventWriter) Observe(e bulwark.Event) {
	switch e.Kind {
	case bulwark.EventCall, bulwark.EventProbe, bulwark.EventPick:
		return // too many, and the tally does not count them from instances
	}
	ew.send(toWire(e))
}

// toWire returns e as the tally needs it on the wire.
func toWire(e bulwark.Event) wireEvent {
	we := wireEvent{Kind: e.Kind, Component: e.Component, Name: e.Name, Addr: e.Endpoint.Addr,
		Attempt: e.Attempt, Limit: e.Limit, From: e.From, To: e.To, Reason: e.Reason}
	var rej *limit.RejectedError
	if errors.As(e.Err, &rej) {
		we.To = rej.Criticality.String() // a refusal has no state: To carries its criticality
	}
	return we
}

// event returns the event that e carries, for the tally.
func (e wireEvent) event() bulwark.Event {
	return bulwark.Event{Kind: e.Kind, Component: e.Component, Name: e.Name,
		Endpoint: bulwark.Endpoint{Addr: e.Addr}, Attempt: e.Attempt, Limit: e.Limit, From: e.From, To: e.To, Reason: e.Reason}
}

func (ew *eventWriter) send(e wireEvent) {
	select {
	case ew.ch <- e:
	default:
	}
}

func (ew *eventWriter) close() {
	close(ew.ch)
	<-ew.done
}

// serveOrders is the instance process: one order service on the tour's
// shared state, until stdin ends.
func serveOrders(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tour orderservice", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "", "address to serve on")
	name := fs.String("name", "orders", "instance name")
	state := fs.String("state", "", "base URL of the tour's shared orders and keys")
	payments := fs.String("payments", "", "base URL of the payment provider")
	lease := fs.Duration("lease", 0, "idempotency lease of a create")
	keys := fs.String("api-keys", "", "the tour clients' API keys, as tenant=key,tenant=key")
	conns := fs.Int("db-conns", 4, "connections of the instance's pool to the shared orders")
	queryTime := fs.Duration("db-time", 0, "least time a query holds its connection (a report, five times that)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	apiKeys := map[string]string{}
	for _, pair := range strings.Split(*keys, ",") {
		tenant, key, ok := strings.Cut(pair, "=")
		if !ok {
			return fmt.Errorf("-api-keys: %q is not tenant=key", pair)
		}
		apiKeys[key] = tenant
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("instance", *name)
	events := newEventWriter(stdout)
	defer events.close()

	transport := &http.Transport{MaxIdleConnsPerHost: 64}
	defer transport.CloseIdleConnections()
	shared := &stateClient{base: *state, http: &http.Client{Transport: transport, Timeout: 10 * time.Second}}
	repo := newPool(remoteRepo{shared}, *conns, *queryTime)
	svc, err := orderservice.New(orderservice.Config{
		Name: *name, Repository: repo, Partitions: 8, IdempotencyStore: remoteStore{shared},
		APIKeys: apiKeys, Lease: *lease, PaymentURL: *payments,
		ReadModelInterval: 100 * time.Millisecond,
		Observer:          bulwark.Observers(events, bulwark.SlogObserver(logger)), Logger: logger,
	})
	if err != nil {
		return err
	}
	svc.Start(context.Background())
	defer svc.Close()

	var slow atomic.Int64 // extra latency per request, in nanoseconds
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := time.Duration(slow.Load()); d > 0 && r.URL.Path != "/readyz" {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		svc.Handler().ServeHTTP(w, r)
	})
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	events.send(wireEvent{Ready: true})

	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "slow":
			if d, err := time.ParseDuration(arg); err == nil {
				slow.Store(int64(d))
			}
		}
	}
	svc.Drain()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(ctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// instance is an order-service instance as the tour sees it: a process it
// starts, kills with SIGKILL and starts again on the same address.
type instance struct {
	name, zone, addr string
	args             []string // the process's flags
	tally            *tally
	logs             io.Writer

	mu     sync.Mutex // guards the fields below
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	ready  chan struct{} // closed when the process serves
	exited chan struct{} // closed when the process has exited and its output is read
}

// start runs the instance's process.
func (in *instance) start() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, in.args...)
	// A binary built with -race (the tour's test) sleeps a second at exit.
	cmd.Env = append(os.Environ(), roleEnv+"=orderservice", "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
	cmd.Stderr = in.logs
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", in.name, err)
	}
	ready, exited := make(chan struct{}), make(chan struct{})
	in.mu.Lock()
	in.cmd, in.stdin, in.ready, in.exited = cmd, stdin, ready, exited
	in.mu.Unlock()
	go func() {
		sc := bufio.NewScanner(stdout)
		isReady := false
		for sc.Scan() {
			var e wireEvent
			if json.Unmarshal(sc.Bytes(), &e) != nil {
				continue
			}
			if e.Ready && !isReady {
				isReady = true
				close(ready)
				continue
			}
			in.tally.Observe(e.event())
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(exited)
	}()
	return nil
}

// waitReady waits until the process serves.
func (in *instance) waitReady(timeout time.Duration) error {
	in.mu.Lock()
	ready, exited := in.ready, in.exited
	in.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ready:
		return nil
	case <-exited:
		return fmt.Errorf("%s exited before serving", in.name)
	case <-t.C:
		return fmt.Errorf("%s did not serve within %v", in.name, timeout)
	}
}

// kill kills the process with SIGKILL, as a crash would, and waits for it.
func (in *instance) kill() {
	in.mu.Lock()
	cmd, exited := in.cmd, in.exited
	in.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// stop asks the process to shut down (it drains and closes its server), and
// kills it if it has not exited after a while.
func (in *instance) stop() {
	in.mu.Lock()
	cmd, stdin, exited := in.cmd, in.stdin, in.exited
	in.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = stdin.Close()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-exited:
	case <-t.C:
		in.kill()
	}
}

// setSlow makes the process add d to every request.
func (in *instance) setSlow(d time.Duration) {
	in.mu.Lock()
	stdin := in.stdin
	in.mu.Unlock()
	if stdin != nil {
		_, _ = fmt.Fprintf(stdin, "slow %s\n", d)
	}
}

// pool is an instance's pool of connections to the shared orders, as a
// pgxpool is to PostgreSQL: a query waits for one of its connections, first
// come first served, and holds it for at least the query time (a report,
// which scans the tenant's orders, five times that). It is what limits the
// work an instance can do, and what its Limiter protects: past its
// capacity, queries queue for a connection.
type pool struct {
	orderservice.Repository
	conns chan struct{}
	query time.Duration
}

func newPool(r orderservice.Repository, conns int, query time.Duration) *pool {
	return &pool{Repository: r, conns: make(chan struct{}, max(conns, 1)), query: query}
}

// hold runs q on a connection, for at least n query times.
func (p *pool) hold(ctx context.Context, n int, q func() error) error {
	select {
	case p.conns <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-p.conns }()
	start := time.Now()
	err := q()
	if rest := time.Duration(n)*p.query - time.Since(start); rest > 0 && err == nil {
		t := time.NewTimer(rest)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return err
}

func (p *pool) Create(ctx context.Context, o orderservice.Order) error {
	return p.hold(ctx, 1, func() error { return p.Repository.Create(ctx, o) })
}

func (p *pool) Get(ctx context.Context, id string) (o orderservice.Order, err error) {
	err = p.hold(ctx, 1, func() error { o, err = p.Repository.Get(ctx, id); return err })
	return o, err
}

func (p *pool) Update(ctx context.Context, o orderservice.Order) error {
	return p.hold(ctx, 1, func() error { return p.Repository.Update(ctx, o) })
}

func (p *pool) Changes(ctx context.Context, after int64, limit int) (orders []orderservice.Order, last int64, more bool, err error) {
	err = p.hold(ctx, 1, func() error { orders, last, more, err = p.Repository.Changes(ctx, after, limit); return err })
	return orders, last, more, err
}

func (p *pool) Summary(ctx context.Context, tenant string) (rows []orderservice.SummaryRow, err error) {
	err = p.hold(ctx, 5, func() error { rows, err = p.Repository.Summary(ctx, tenant); return err })
	return rows, err
}
