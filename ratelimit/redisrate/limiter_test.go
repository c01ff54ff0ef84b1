package redisrate

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/ratelimit"
	"github.com/redis/go-redis/v9"
)

func TestNewInvalidConfig(t *testing.T) {
	ok := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ContextTimeoutEnabled: true})
	defer ok.Close()
	noCtx := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer noCtx.Close()
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"no client", Config{Rate: 1}},
		{"client without context timeouts", Config{Client: noCtx, Rate: 1}},
		{"no rate", Config{Client: ok}},
		{"negative period", Config{Client: ok, Rate: 1, Period: -1}},
		{"negative burst", Config{Client: ok, Rate: 1, Burst: -1}},
		{"negative timeout", Config{Client: ok, Rate: 1, Timeout: -1}},
		{"above one per µs", Config{Client: ok, Rate: 2000, Period: time.Millisecond}},
		{"burst too long to refill", Config{Client: ok, Rate: 1, Period: time.Hour, Burst: math.MaxInt32}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

// The bucket of a key starts full, holds Burst, and a refusal says how long
// until the next token, measured on the server's clock.
func TestTake(t *testing.T) {
	rdb := serverClient(t)
	rec := &recorder{}
	l := newLimiter(t, rdb, Config{Name: "api", Rate: 1, Period: time.Hour, Burst: 3, Observer: rec})
	ctx := context.Background()
	for i, want := range []int{2, 1, 0} {
		r, err := l.Take(ctx, "tenant-1", 1)
		if err != nil || !r.Allowed || r.Remaining != want || r.Limit != 3 {
			t.Fatalf("Take %d = %+v, %v; want allowed with %d remaining", i, r, err, want)
		}
	}
	r, err := l.Take(ctx, "tenant-1", 1)
	if err != nil || r.Allowed || r.Remaining != 0 {
		t.Fatalf("Take beyond Burst = %+v, %v; want refused", r, err)
	}
	if r.RetryAfter < time.Hour-time.Minute || r.RetryAfter > time.Hour {
		t.Errorf("RetryAfter = %v, want about 1h (one token per hour)", r.RetryAfter)
	}
	if r.Reset < 3*time.Hour-time.Minute || r.Reset > 3*time.Hour {
		t.Errorf("Reset = %v, want about 3h (three tokens to refill)", r.Reset)
	}
	if r, err := l.Take(ctx, "tenant-2", 3); err != nil || !r.Allowed {
		t.Fatalf("another key = %+v, %v; want its own full bucket", r, err)
	}
	if r, err := l.Take(ctx, "tenant-2", 4); err != nil || r.Allowed || r.RetryAfter != time.Duration(math.MaxInt64) {
		t.Fatalf("Take(4) with Burst 3 = %+v, %v; want never allowed", r, err)
	}
	if r, err := l.Take(ctx, "tenant-2", 0); err != nil || !r.Allowed || r.Remaining != 0 {
		t.Fatalf("Take(0) = %+v, %v; want allowed, nothing taken", r, err)
	}
	evs := rec.events()
	if len(evs) != 2 || evs[0].Kind != bulwark.EventRejected || evs[0].Key != "tenant-1" || evs[0].Reason != "rate" ||
		evs[1].Reason != "burst" || evs[0].Component != bulwark.ComponentRateLimit || evs[0].Name != "api" {
		t.Fatalf("events = %+v, want a rate and a burst rejection", evs)
	}
	// The key expires when its bucket is full again.
	ttl, err := rdb.PTTL(ctx, l.prefix+"tenant-1").Result()
	if err != nil || ttl < 3*time.Hour-time.Minute || ttl > 3*time.Hour {
		t.Fatalf("PTTL = %v, %v; want about 3h", ttl, err)
	}
}

// Tokens come back at Rate, by the server's clock.
func TestRefill(t *testing.T) {
	rdb := serverClient(t)
	l := newLimiter(t, rdb, Config{Rate: 20, Burst: 1}) // one token per 50ms
	ctx := context.Background()
	if r, _ := l.Take(ctx, "k", 1); !r.Allowed {
		t.Fatal("first Take refused")
	}
	r, err := l.Take(ctx, "k", 1)
	if err != nil || r.Allowed || r.RetryAfter <= 0 || r.RetryAfter > 50*time.Millisecond {
		t.Fatalf("second Take = %+v, %v; want refused with RetryAfter in (0, 50ms]", r, err)
	}
	time.Sleep(r.RetryAfter + 5*time.Millisecond) // real time: the server's clock decides
	if r, err := l.Take(ctx, "k", 1); err != nil || !r.Allowed {
		t.Fatalf("Take after RetryAfter = %+v, %v; want allowed", r, err)
	}
}

// Each decision is one round trip once the script is cached.
func TestOneRoundTrip(t *testing.T) {
	rdb := serverClient(t)
	l := newLimiter(t, rdb, Config{Rate: 100})
	ctx := context.Background()
	if _, err := l.Take(ctx, "warm", 1); err != nil { // loads the script if the server lacks it
		t.Fatal(err)
	}
	h := &counter{}
	rdb.AddHook(h)
	for range 10 {
		if _, err := l.Take(ctx, "k", 1); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.n.Load(); n != 10 {
		t.Fatalf("10 decisions took %d round trips, want 10", n)
	}
}

func TestDo(t *testing.T) {
	rdb := serverClient(t)
	l := newLimiter(t, rdb, Config{Name: "search", Rate: 1, Period: time.Hour, Burst: 1})
	ctx := context.Background()
	ran := 0
	op := func(context.Context) error { ran++; return nil }
	if err := l.Do(ctx, "k", op); err != nil || ran != 1 {
		t.Fatalf("Do = %v (ran %d)", err, ran)
	}
	err := l.Do(ctx, "k", op)
	var le *ratelimit.LimitError
	if !errors.As(err, &le) || !errors.Is(err, ratelimit.ErrLimited) || le.Key != "k" || le.RetryAfter() < 59*time.Minute || ran != 1 {
		t.Fatalf("Do over the limit = %v (ran %d), want a *ratelimit.LimitError for k with RetryAfter about 1h", err, ran)
	}
}

type keyOf struct{}

func TestPolicy(t *testing.T) {
	rdb := serverClient(t)
	l := newLimiter(t, rdb, Config{Rate: 1, Period: time.Hour, Burst: 1})
	p := bulwark.Compose(l.Policy(func(ctx context.Context) string { k, _ := ctx.Value(keyOf{}).(string); return k }))
	ctx := context.WithValue(context.Background(), keyOf{}, "tenant-9")
	noop := func(context.Context) error { return nil }
	if err := p.Do(ctx, noop); err != nil {
		t.Fatal(err)
	}
	var le *ratelimit.LimitError
	if err := p.Do(ctx, noop); !errors.As(err, &le) || le.Key != "tenant-9" {
		t.Fatalf("second call = %v, want a *ratelimit.LimitError for tenant-9", err)
	}
}

func TestMiddleware(t *testing.T) {
	rdb := serverClient(t)
	l := newLimiter(t, rdb, Config{Rate: 1, Period: time.Minute, Burst: 1})
	mw, err := ratelimit.Middleware(ratelimit.HTTPConfig{Limiter: l, Key: func(r *http.Request) string { return r.Header.Get("X-Api-Key") }, Headers: true})
	if err != nil {
		t.Fatal(err)
	}
	h := mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	var codes []int
	for range 2 {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Header.Set("X-Api-Key", "k-1")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		codes = append(codes, rec.Code)
		if got := rec.Header().Get("RateLimit-Policy"); got != `"default";q=1;w=60` {
			t.Errorf("RateLimit-Policy = %q", got)
		}
		if rec.Code == http.StatusTooManyRequests && rec.Header().Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
	}
	if codes[0] != http.StatusOK || codes[1] != http.StatusTooManyRequests {
		t.Fatalf("codes = %v, want [200 429]", codes)
	}
}

// A canceled caller is not an outage: Take returns ctx.Err() and reports
// nothing.
func TestTakeCanceled(t *testing.T) {
	rdb := serverClient(t)
	rec := &recorder{}
	l := newLimiter(t, rdb, Config{Rate: 1, FailOpen: true, Observer: rec})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Take(ctx, "k", 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Take with a canceled context = %v", err)
	}
	if evs := rec.events(); len(evs) != 0 {
		t.Fatalf("events = %+v, want none", evs)
	}
}
