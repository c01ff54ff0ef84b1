package idempotencytest

// Helpers for the tests of stores that talk to a server: a TCP proxy that
// fakes network faults, an outage scenario, a round-trip count, and
// benchmarks that report latency percentiles.

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/idempotency"
)

// The claim of RunOutage.
var outageFingerprint = []byte("outage")

const outageLease = 10 * time.Second

// FaultProxy is a TCP proxy on 127.0.0.1 in front of a store's server, with
// which a store's tests simulate network faults without stopping a shared
// server: it can cut the link (connections reset, new ones refused), black-hole (open connections
// drop what they carry, new ones are accepted and never answered, as in a
// network partition) and restore.
type FaultProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	mode  int                   // guarded by mu: proxyUp, proxyCut or proxyBlackhole
	conns map[net.Conn]struct{} // guarded by mu: every forwarded connection, both sides
	held  map[net.Conn]struct{} // guarded by mu: connections accepted while black-holed
}

const (
	proxyUp = iota
	proxyCut
	proxyBlackhole
)

// NewFaultProxy starts a FaultProxy that forwards to target ("host:port")
// and stops when tb's test ends. Connect the store's client to its Addr.
func NewFaultProxy(tb testing.TB, target string) *FaultProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("fault proxy: listen: %v", err)
	}
	p := &FaultProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, held: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.close)
	return p
}

// Addr returns the proxy's address, "127.0.0.1:port".
func (p *FaultProxy) Addr() string { return p.ln.Addr().String() }

func (p *FaultProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		mode := p.mode
		if mode == proxyCut {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		if mode == proxyBlackhole {
			p.held[c] = struct{}{} // open and silent until the mode changes
			p.mu.Unlock()
			continue
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.forward(c)
	}
}

func (p *FaultProxy) forward(c net.Conn) {
	defer p.wg.Done()
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		p.drop(c)
		return
	}
	p.mu.Lock()
	if p.mode != proxyUp {
		p.mu.Unlock()
		_ = s.Close()
		p.drop(c)
		return
	}
	p.conns[s] = struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 && !p.stalled() {
				if _, err := dst.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	go pipe(s, c)
	go pipe(c, s)
	<-done
	p.drop(c)
	p.drop(s)
	<-done
}

func (p *FaultProxy) drop(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *FaultProxy) stalled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode == proxyBlackhole
}

func (p *FaultProxy) set(mode int) {
	p.mu.Lock()
	p.mode = mode
	var conns []net.Conn
	for c := range p.held {
		conns = append(conns, c)
	}
	p.held = map[net.Conn]struct{}{}
	if mode == proxyCut {
		for c := range p.conns {
			conns = append(conns, c)
		}
		p.conns = map[net.Conn]struct{}{}
	}
	p.mu.Unlock()
	for _, c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // reset, as a dead link or server would
		}
		_ = c.Close()
	}
}

// Cut resets every connection and refuses new ones until Restore.
func (p *FaultProxy) Cut() { p.set(proxyCut) }

// Blackhole makes open connections drop what they carry and accepts new
// ones without answering, until Restore.
func (p *FaultProxy) Blackhole() { p.set(proxyBlackhole) }

// Restore forwards again; connections accepted while black-holed are
// reset.
func (p *FaultProxy) Restore() { p.set(proxyUp) }

func (p *FaultProxy) close() {
	_ = p.ln.Close()
	p.set(proxyCut)
	p.wg.Wait()
}

// RunOutage checks how a store lives through an outage of its server: eight
// goroutines claim and complete fresh keys with store while cut() takes the
// link down and restore() brings it back (a FaultProxy's Cut and Restore).
// Requests must fail during the cut with errors that wantErr accepts (a
// store error that says which operation and key, wrapping the network
// failure), succeed again after it, and leave no key wedged: once a lease
// has passed on clk, the store's Clock, every key is completed or free.
func RunOutage(t *testing.T, store idempotency.Store, clk *bulwarktest.Clock, cut, restore func(), wantErr func(error) bool) {
	t.Helper()
	claim, complete := store.Claim, store.Complete
	ctx := context.Background()
	var (
		mu     sync.Mutex
		failed []error
		ok     int
		keys   []string
		wg     sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("w%d-%d", w, i)
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				c, err := claim(cctx, key, outageFingerprint, outageLease)
				if err == nil && c.Won {
					err = complete(cctx, key, c.Token, []byte("v"), time.Hour)
				}
				cancel()
				mu.Lock()
				keys = append(keys, key)
				if err != nil {
					failed = append(failed, err)
				} else {
					ok++
				}
				mu.Unlock()
			}
		})
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for start := time.Now(); ; time.Sleep(time.Millisecond) {
			mu.Lock()
			done := cond()
			mu.Unlock()
			if done {
				return
			}
			if time.Since(start) > 20*time.Second {
				close(stop)
				wg.Wait()
				t.Fatalf("timed out waiting until %s", what)
			}
		}
	}
	waitFor("100 requests succeed", func() bool { return ok >= 100 })
	cut()
	waitFor("20 requests fail", func() bool { return len(failed) >= 20 })
	restore()
	mu.Lock()
	before := ok
	mu.Unlock()
	waitFor("100 more requests succeed", func() bool { return ok >= before+100 })
	close(stop)
	wg.Wait()

	for _, err := range failed {
		if !wantErr(err) {
			t.Errorf("error during the cut = %v, want a store error wrapping the network failure", err)
		}
	}
	t.Logf("%d requests succeeded, %d failed during the cut", ok, len(failed))

	// Every key is now completed or, once its lease has passed, free.
	clk.Advance(outageLease)
	for _, key := range keys {
		c, err := claim(ctx, key, outageFingerprint, outageLease)
		if err != nil {
			t.Fatalf("Claim(%q) after the restore: %v", key, err)
		}
		if !c.Won && !c.Record.Completed {
			t.Errorf("Claim(%q) a lease after the restore = %+v, want the key completed or free", key, c)
		}
	}
}

// latencies collects per-operation latencies from many goroutines and
// reports their percentiles.
type latencies struct {
	mu  sync.Mutex
	all []time.Duration // guarded by mu
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, d...)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B, elapsed time.Duration) {
	if len(l.all) == 0 {
		return
	}
	slices.Sort(l.all)
	pct := func(p float64) float64 {
		return float64(l.all[int(p*float64(len(l.all)-1))].Microseconds())
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(float64(len(l.all))/elapsed.Seconds(), "req/s")
}

// RunClients runs op b.N times, from one goroutine when clients is 1 and
// otherwise from clients goroutines through RunParallel, and reports the
// latency percentiles and throughput of op, as BenchClaimComplete does for a
// store's own operations: a store's benchmark of another path (a
// transactional completion, say) uses it to report the same metrics. op gets
// a sequence number, unique across the goroutines, to make keys from. The
// extra metrics are p50-µs, p99-µs and req/s.
func RunClients(b *testing.B, clients int, op func(i int64) error) {
	b.ReportAllocs()
	var lat latencies
	var seq atomic.Int64
	b.ResetTimer()
	start := time.Now()
	if clients == 1 {
		d := make([]time.Duration, 0, b.N)
		for b.Loop() {
			t := time.Now()
			if err := op(seq.Add(1)); err != nil {
				b.Fatal(err)
			}
			d = append(d, time.Since(t))
		}
		lat.add(d)
	} else {
		b.SetParallelism((clients + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		b.RunParallel(func(pb *testing.PB) {
			var d []time.Duration
			for pb.Next() {
				t := time.Now()
				if err := op(seq.Add(1)); err != nil {
					b.Error(err)
					return
				}
				d = append(d, time.Since(t))
			}
			lat.add(d)
		})
	}
	lat.report(b, time.Since(start))
}

// CheckRoundTrips checks DESIGN.md's budget for a shared store: a claim, an
// extend, a complete, a replay, a get and a release each cost one round trip
// to the server. trips returns the round trips made so far, as counted by a client
// hook (go-redis) or a query tracer (pgx); warm the server first where it
// caches (Redis scripts).
func CheckRoundTrips(t *testing.T, s idempotency.Store, trips func() int64) {
	t.Helper()
	ctx := context.Background()
	var token uint64
	tests := []struct {
		name string
		op   func() error
	}{
		{"claim", func() error {
			c, err := s.Claim(ctx, "rt-k", outageFingerprint, outageLease)
			token = c.Token
			return err
		}},
		{"extend", func() error { return s.Extend(ctx, "rt-k", token, outageLease) }},
		{"complete", func() error { return s.Complete(ctx, "rt-k", token, []byte("v"), time.Hour) }},
		{"replay", func() error {
			c, err := s.Claim(ctx, "rt-k", outageFingerprint, outageLease)
			if err == nil && (!c.Record.Completed || string(c.Record.Value) != "v") {
				err = fmt.Errorf("replay got %+v", c)
			}
			return err
		}},
		{"get", func() error { _, err := s.Get(ctx, "rt-k"); return err }},
		{"claim to release", func() error {
			c, err := s.Claim(ctx, "rt-r", outageFingerprint, outageLease)
			token = c.Token
			return err
		}},
		{"release", func() error { return s.Release(ctx, "rt-r", token) }},
	}
	for _, tt := range tests {
		before := trips()
		if err := tt.op(); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := trips() - before; got != 1 {
			t.Errorf("round trips of %s = %d, want 1", tt.name, got)
		}
	}
}

// benchValue is the result the benchmarks store: 1 KiB.
var benchValue = make([]byte, 1024)

// BenchClaimComplete measures first requests: Claim of a fresh key, then
// Complete with a 1 KiB result, with each number of concurrent clients in
// a sub-benchmark "clients=N" on a store from newStore, reporting p50-µs,
// p99-µs and req/s.
func BenchClaimComplete(b *testing.B, newStore func(b *testing.B) idempotency.Store, clients ...int) {
	for _, n := range clients {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			s := newStore(b)
			ctx := context.Background()
			RunClients(b, n, func(i int64) error {
				key := fmt.Sprintf("k%d", i)
				c, err := s.Claim(ctx, key, outageFingerprint, time.Minute)
				if err != nil {
					return err
				}
				return s.Complete(ctx, key, c.Token, benchValue, time.Hour)
			})
		})
	}
}

// BenchReplay measures duplicate requests: Claim of one of 1000 completed
// keys, which returns its 1 KiB result, as BenchClaimComplete does.
func BenchReplay(b *testing.B, newStore func(b *testing.B) idempotency.Store, clients ...int) {
	const keys = 1000
	for _, n := range clients {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			s := newStore(b)
			ctx := context.Background()
			for i := range keys {
				key := fmt.Sprintf("k%d", i)
				c, err := s.Claim(ctx, key, outageFingerprint, time.Minute)
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Complete(ctx, key, c.Token, benchValue, time.Hour); err != nil {
					b.Fatal(err)
				}
			}
			RunClients(b, n, func(i int64) error {
				_, err := s.Claim(ctx, fmt.Sprintf("k%d", i%keys), outageFingerprint, time.Minute)
				return err
			})
		})
	}
}
