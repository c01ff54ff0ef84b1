package redisstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/idempotencytest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

const (
	lease     = 30 * time.Second
	retention = 24 * time.Hour
)

var fp = []byte("fingerprint")

func TestNew(t *testing.T) {
	ok := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ContextTimeoutEnabled: true})
	defer ok.Close()
	noCtx := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer noCtx.Close()
	clusterNoCtx := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}})
	defer clusterNoCtx.Close()
	universal := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{"127.0.0.1:1"}, ContextTimeoutEnabled: true})
	defer universal.Close()
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "nil client", cfg: Config{}, wantErr: "Client is nil"},
		{name: "client ignoring ctx", cfg: Config{Client: noCtx}, wantErr: "ContextTimeoutEnabled"},
		{name: "cluster client ignoring ctx", cfg: Config{Client: clusterNoCtx}, wantErr: "ContextTimeoutEnabled"},
		{name: "universal client", cfg: Config{Client: universal}},
		{name: "brace in prefix", cfg: Config{Client: ok, Prefix: "a{b}:"}, wantErr: "brace"},
		{name: "negative grace", cfg: Config{Client: ok, ExpiryGrace: -time.Second}, wantErr: "ExpiryGrace"},
		{name: "defaults", cfg: Config{Client: ok}},
		{name: "custom", cfg: Config{Client: ok, Prefix: "svc:", ExpiryGrace: time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.cfg)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalidConfig) || s != nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New(%s) = %v, %v; want ErrInvalidConfig containing %q", tt.name, s, err, tt.wantErr)
				}
				return
			}
			require.NoError(t, err)
			wantPrefix, wantGrace := tt.cfg.Prefix, tt.cfg.ExpiryGrace
			if wantPrefix == "" {
				wantPrefix = DefaultPrefix
			}
			if wantGrace == 0 {
				wantGrace = time.Minute
			}
			if s.prefix != wantPrefix || s.grace != wantGrace {
				t.Errorf("New(%s) prefix, grace = %q, %v, want %q, %v", tt.name, s.prefix, s.grace, wantPrefix, wantGrace)
			}
		})
	}
}

func TestRedisKeyHashTag(t *testing.T) {
	s := &Store{prefix: "svc:"}
	tests := []struct{ key, want string }{
		{"order-1", "svc:{order-1}"},
		{"", "svc:{}"},
		{"a:b", "svc:{a:b}"},
	}
	for _, tt := range tests {
		if got := s.redisKey(tt.key); got != tt.want {
			t.Errorf("redisKey(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	clk := bulwarktest.NewClock(time.Time{})
	s := newStore(t, serverClient(t), clk)
	start := clk.Now()

	c, err := s.Claim(ctx, "k", fp, lease)
	require.NoError(t, err)
	if !c.Won || c.Token == 0 || c.TakenOver {
		t.Fatalf("Claim(%q) on a free key = %+v, want Won with a token", "k", c)
	}
	tok := c.Token

	inflight := idempotency.Record{Key: "k", Fingerprint: fp, Token: tok, LeaseExpiry: start.Add(lease)}
	dup, err := s.Claim(ctx, "k", []byte("other"), lease)
	require.NoError(t, err)
	require.Equal(t, idempotency.Claim{Record: inflight}, dup, "Claim of an in-flight key")
	got, err := s.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, inflight, got, "Get of an in-flight key")

	err = s.Complete(ctx, "k", tok+1, []byte("v"), retention)
	if !errors.Is(err, idempotency.ErrFenced) {
		t.Fatalf("Complete(%q) with a wrong token = %v, want ErrFenced", "k", err)
	}
	clk.Advance(time.Second)
	require.NoError(t, s.Complete(ctx, "k", tok, []byte("result"), retention))

	done := idempotency.Record{Key: "k", Fingerprint: fp, Completed: true, Token: tok, Value: []byte("result"),
		LeaseExpiry: start.Add(lease), ExpiresAt: start.Add(time.Second + retention)}
	replay, err := s.Claim(ctx, "k", fp, lease)
	require.NoError(t, err)
	require.Equal(t, idempotency.Claim{Record: done}, replay, "Claim of a completed key")
	got, err = s.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, done, got, "Get of a completed key")

	if err := s.Complete(ctx, "k", tok, []byte("again"), retention); !errors.Is(err, idempotency.ErrFenced) {
		t.Errorf("second Complete(%q) = %v, want ErrFenced", "k", err)
	}
	if err := s.Release(ctx, "k", tok); !errors.Is(err, idempotency.ErrFenced) {
		t.Errorf("Release(%q) after Complete = %v, want ErrFenced", "k", err)
	}

	clk.Advance(retention - time.Microsecond)
	_, err = s.Get(ctx, "k")
	require.NoError(t, err, "Get just before the retention ends")
	clk.Advance(time.Microsecond)
	if _, err := s.Get(ctx, "k"); !errors.Is(err, idempotency.ErrNotFound) {
		t.Fatalf("Get(%q) after retention = %v, want ErrNotFound", "k", err)
	}
	again, err := s.Claim(ctx, "k", fp, lease)
	require.NoError(t, err)
	if !again.Won || again.TakenOver || again.Token == tok {
		t.Fatalf("Claim(%q) after retention = %+v, want a fresh win with a new token", "k", again)
	}
}

func TestLeaseTakeover(t *testing.T) {
	ctx := context.Background()
	clk := bulwarktest.NewClock(time.Time{})
	s := newStore(t, serverClient(t), clk)

	first, err := s.Claim(ctx, "k", fp, lease)
	require.NoError(t, err)
	clk.Advance(lease - time.Microsecond)
	c, err := s.Claim(ctx, "k", fp, lease)
	require.NoError(t, err)
	if c.Won {
		t.Fatalf("Claim(%q) before the lease ends = %+v, want a loss", "k", c)
	}
	clk.Advance(time.Microsecond)
	second, err := s.Claim(ctx, "k", fp, lease)
	require.NoError(t, err)
	if !second.Won || !second.TakenOver || second.Token == first.Token {
		t.Fatalf("Claim(%q) after the lease = %+v, want a takeover with a new token", "k", second)
	}
	if err := s.Complete(ctx, "k", first.Token, []byte("late"), retention); !errors.Is(err, idempotency.ErrFenced) {
		t.Errorf("Complete(%q) by the old owner = %v, want ErrFenced", "k", err)
	}
	if err := s.Release(ctx, "k", first.Token); !errors.Is(err, idempotency.ErrFenced) {
		t.Errorf("Release(%q) by the old owner = %v, want ErrFenced", "k", err)
	}
	require.NoError(t, s.Complete(ctx, "k", second.Token, []byte("v"), retention))
}

func TestRelease(t *testing.T) {
	ctx := context.Background()
	clk := bulwarktest.NewClock(time.Time{})
	s := newStore(t, serverClient(t), clk)

	c, err := s.Claim(ctx, "k", fp, lease)
	require.NoError(t, err)
	require.NoError(t, s.Release(ctx, "k", c.Token))
	if _, err := s.Get(ctx, "k"); !errors.Is(err, idempotency.ErrNotFound) {
		t.Fatalf("Get(%q) after Release = %v, want ErrNotFound", "k", err)
	}
	if err := s.Release(ctx, "k", c.Token); !errors.Is(err, idempotency.ErrFenced) {
		t.Errorf("second Release(%q) = %v, want ErrFenced", "k", err)
	}
	if err := s.Complete(ctx, "k", c.Token, nil, retention); !errors.Is(err, idempotency.ErrFenced) {
		t.Errorf("Complete(%q) after Release = %v, want ErrFenced", "k", err)
	}
	again, err := s.Claim(ctx, "k", fp, lease)
	require.NoError(t, err)
	if !again.Won || again.TakenOver || again.Token == c.Token {
		t.Fatalf("Claim(%q) after Release = %+v, want a fresh win with a new token", "k", again)
	}
}

func TestArgumentErrors(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, serverClient(t), bulwarktest.NewClock(time.Time{}))
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"zero lease", func() error { _, err := s.Claim(ctx, "k", fp, 0); return err }, "lease"},
		{"negative lease", func() error { _, err := s.Claim(ctx, "k", fp, -time.Second); return err }, "lease"},
		{"zero retention", func() error { return s.Complete(ctx, "k", 1, nil, 0) }, "retention"},
		{"lease out of range", func() error { _, err := s.Claim(ctx, "k", fp, math.MaxInt64); return err }, "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: error = %v, want one containing %q", tt.name, err, tt.want)
			}
		})
	}
}

// TestRetriedScriptsAreIdempotent runs each script twice with the same
// arguments, as the client does when it retries after a lost reply.
func TestRetriedScriptsAreIdempotent(t *testing.T) {
	ctx := context.Background()
	clk := bulwarktest.NewClock(time.Time{})
	s := newStore(t, serverClient(t), clk)
	us, ttl, err := s.duration("lease", lease)
	require.NoError(t, err)
	for i := range 2 {
		res, err := s.run(ctx, claimScript, "k", s.now(), fp, "42", us, ttl)
		require.NoError(t, err)
		c, err := parseClaim("k", 42, res)
		require.NoError(t, err)
		if !c.Won || c.Token != 42 {
			t.Fatalf("claim script run %d = %+v, want Won with token 42", i+1, c)
		}
	}
	for i := range 2 {
		res, err := s.run(ctx, completeScript, "k", s.now(), "42", "v", us, ttl, "7")
		require.NoError(t, err)
		if res != int64(1) {
			t.Fatalf("complete script run %d = %v, want 1", i+1, res)
		}
	}
	res, err := s.run(ctx, completeScript, "k", s.now(), "42", "v", us, ttl, "8")
	require.NoError(t, err)
	if res != int64(0) {
		t.Fatalf("complete script with another nonce = %v, want 0 (fenced)", res)
	}
}

func TestScriptCacheMiss(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, serverClient(t), nil)
	// A script no server has seen: EVALSHA fails with NOSCRIPT and run
	// falls back to EVAL, which also caches it.
	sc := newScript(fmt.Sprintf("return %d", time.Now().UnixNano()))
	want := int64(0)
	for i := range 2 {
		res, err := s.run(ctx, sc, "k")
		require.NoError(t, err)
		if i == 0 {
			want = res.(int64)
		}
		if res != want {
			t.Fatalf("run %d of a new script = %v, want %v", i+1, res, want)
		}
	}
}

func TestServerTTL(t *testing.T) {
	ctx := context.Background()
	rdb := serverClient(t)
	clk := bulwarktest.NewClock(time.Time{})
	s := newStore(t, rdb, clk)
	c, err := s.Claim(ctx, "k", fp, lease)
	require.NoError(t, err)
	checkTTL := func(what string, want time.Duration) {
		t.Helper()
		ttl, err := rdb.PTTL(ctx, s.redisKey("k")).Result()
		require.NoError(t, err)
		if ttl > want || ttl < want-5*time.Second {
			t.Errorf("PTTL after %s = %v, want about %v", what, ttl, want)
		}
	}
	checkTTL("Claim", lease+time.Minute)
	require.NoError(t, s.Complete(ctx, "k", c.Token, []byte("v"), retention))
	checkTTL("Complete", retention+time.Minute)
}

func TestRoundTrips(t *testing.T) {
	ctx := context.Background()
	rdb := serverClient(t)
	clk := bulwarktest.NewClock(time.Time{})
	s := newStore(t, rdb, clk)
	h := &counter{}
	rdb.AddHook(h)

	// Warm the server's script cache, as any running service has.
	w, err := s.Claim(ctx, "warm", fp, lease)
	require.NoError(t, err)
	require.NoError(t, s.Complete(ctx, "warm", w.Token, nil, retention))
	w, err = s.Claim(ctx, "warm2", fp, lease)
	require.NoError(t, err)
	require.NoError(t, s.Extend(ctx, "warm2", w.Token, lease))
	require.NoError(t, s.Release(ctx, "warm2", w.Token))
	_, err = s.Get(ctx, "warm")
	require.NoError(t, err)

	idempotencytest.CheckRoundTrips(t, s, h.n.Load)
}

func TestClaimConcurrentSafe(t *testing.T) {
	ctx := context.Background()
	clk := bulwarktest.NewClock(time.Time{})
	s := newStore(t, serverClient(t), clk)
	const n = 64
	for round := range 5 {
		key := "k" + strconv.Itoa(round)
		claims := make([]idempotency.Claim, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { claims[i], errs[i] = s.Claim(ctx, key, fp, lease) })
		}
		wg.Wait()
		var winner uint64
		wins := 0
		for i := range n {
			require.NoError(t, errs[i])
			if claims[i].Won {
				wins++
				winner = claims[i].Token
			}
		}
		if wins != 1 {
			t.Fatalf("%d concurrent Claims of %q: %d won, want 1", n, key, wins)
		}
		for i := range n {
			if !claims[i].Won && claims[i].Record.Token != winner {
				t.Errorf("losing Claim(%q) saw token %d, want the winner's %d", key, claims[i].Record.Token, winner)
			}
		}
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now
	rdb := newClient(t, addr, func(o *redis.Options) { o.MaxRetries = -1 })
	s, err := New(Config{Client: rdb})
	require.NoError(t, err)
	ctx := context.Background()
	tests := []struct {
		op   string
		call func() error
	}{
		{"claim", func() error { _, err := s.Claim(ctx, "k", fp, lease); return err }},
		{"complete", func() error { return s.Complete(ctx, "k", 1, nil, retention) }},
		{"release", func() error { return s.Release(ctx, "k", 1) }},
		{"get", func() error { _, err := s.Get(ctx, "k"); return err }},
	}
	for _, tt := range tests {
		err := tt.call()
		want := "redisstore: " + tt.op + ` "k": `
		if err == nil || !strings.HasPrefix(err.Error(), want) || !isNetError(err) ||
			!strings.Contains(err.Error(), "connection refused") {
			t.Errorf("%s with Redis down = %v, want a network error starting %q and saying connection refused", tt.op, err, want)
		}
	}
}
