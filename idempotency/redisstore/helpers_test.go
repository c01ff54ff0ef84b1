package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/redis/go-redis/v9"
)

// redisAddr returns the address of the test server from BULWARK_REDIS_ADDR.
// When it is unset the test skips, or fails under CI=true.
func redisAddr(tb testing.TB) string {
	tb.Helper()
	addr := os.Getenv("BULWARK_REDIS_ADDR")
	if addr == "" {
		if os.Getenv("CI") == "true" {
			tb.Fatal("BULWARK_REDIS_ADDR is unset under CI=true: the redisstore tests need a Redis server")
		}
		tb.Skip("BULWARK_REDIS_ADDR is unset: skipping the tests that need a Redis server (set it to host:port, e.g. 127.0.0.1:6379)")
	}
	return addr
}

// newClient returns a client of addr that is closed when the test ends. The
// server must answer a PING.
func newClient(tb testing.TB, addr string, opts ...func(*redis.Options)) *redis.Client {
	tb.Helper()
	o := &redis.Options{Addr: addr, ContextTimeoutEnabled: true}
	for _, f := range opts {
		f(o)
	}
	c := redis.NewClient(o)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// serverClient returns a client of the test server, checked with a PING.
func serverClient(tb testing.TB) *redis.Client {
	tb.Helper()
	c := newClient(tb, redisAddr(tb))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		tb.Fatalf("Redis at BULWARK_REDIS_ADDR does not answer: %v", err)
	}
	return c
}

// testPrefix returns a random key prefix and deletes every key under it when
// the test ends, so that runs never collide.
func testPrefix(tb testing.TB, c redis.UniversalClient) string {
	tb.Helper()
	var b [8]byte
	_, _ = rand.Read(b[:])
	prefix := "bulwarktest:" + hex.EncodeToString(b[:]) + ":"
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		for len(keys) > 0 {
			n := min(len(keys), 500)
			_ = c.Del(ctx, keys[:n]...).Err()
			keys = keys[n:]
		}
	})
	return prefix
}

// newStore returns a Store on c under a fresh prefix, reading time from clk.
func newStore(tb testing.TB, c redis.UniversalClient, clk bulwark.Clock) *Store {
	tb.Helper()
	s, err := New(Config{Client: c, Prefix: testPrefix(tb, c), Clock: clk})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return s
}

// counter is a redis.Hook that counts the commands sent to the server, each
// one round trip.
type counter struct{ n atomic.Int64 }

func (h *counter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// proxy is a TCP proxy on 127.0.0.1 in front of a server, which a test can
// cut (connections reset, new ones refused), black-hole (open connections
// drop what they carry, new ones are accepted and never answered, as in a
// network partition) and restore.
type proxy struct {
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

func newProxy(tb testing.TB, target string) *proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("proxy listen: %v", err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, held: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.close)
	return p
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
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

func (p *proxy) forward(c net.Conn) {
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

func (p *proxy) drop(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *proxy) stalled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode == proxyBlackhole
}

func (p *proxy) set(mode int) {
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
func (p *proxy) Cut() { p.set(proxyCut) }

// Blackhole makes open connections drop what they carry and accepts new
// ones without answering, until Restore.
func (p *proxy) Blackhole() { p.set(proxyBlackhole) }

// Restore forwards again; connections accepted while black-holed are
// reset.
func (p *proxy) Restore() { p.set(proxyUp) }

func (p *proxy) close() {
	_ = p.ln.Close()
	p.set(proxyCut)
	p.wg.Wait()
}

// isNetError reports whether err comes from the network rather than from the
// store's logic.
func isNetError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}
