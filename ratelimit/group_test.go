package ratelimit_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/ratelimit"
)

func newGroup(t testing.TB, cfg ratelimit.GroupConfig) (*ratelimit.Group, *bulwarktest.Clock) {
	t.Helper()
	clk := bulwarktest.NewClock(t0)
	cfg.Limit.Clock = clk
	g, err := ratelimit.NewGroup(cfg)
	if err != nil {
		t.Fatalf("NewGroup(%+v): %v", cfg, err)
	}
	return g, clk
}

func TestNewGroupInvalidConfig(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  ratelimit.GroupConfig
	}{
		{"no rate", ratelimit.GroupConfig{}},
		{"negative max keys", ratelimit.GroupConfig{Limit: ratelimit.Config{Rate: 1}, MaxKeys: -1}},
		{"negative idle timeout", ratelimit.GroupConfig{Limit: ratelimit.Config{Rate: 1}, IdleTimeout: -1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ratelimit.NewGroup(tt.cfg); !errors.Is(err, ratelimit.ErrInvalidConfig) {
				t.Fatalf("NewGroup(%+v) = %v, want ErrInvalidConfig", tt.cfg, err)
			}
		})
	}
}

func TestGroupKeysAreIndependent(t *testing.T) {
	g, clk := newGroup(t, ratelimit.GroupConfig{Limit: ratelimit.Config{Rate: 10, Burst: 2}})
	for _, key := range []string{"a", "b", "a", "b"} {
		if !g.Allow(key) {
			t.Fatalf("Allow(%q) within its burst = false", key)
		}
	}
	if g.Allow("a") || g.Allow("b") {
		t.Fatal("a key passed beyond its burst")
	}
	if !g.Allow("c") {
		t.Fatal("a new key was refused because others are exhausted")
	}
	r := g.AllowN("a", clk.Now(), 1)
	if r.Allowed || r.RetryAfter != 100*time.Millisecond {
		t.Fatalf("AllowN(a) = %+v, want refused with RetryAfter 100ms", r)
	}
	if n := g.Len(); n != 3 {
		t.Fatalf("Len() = %d, want 3", n)
	}
}

func TestGroupDoAndWait(t *testing.T) {
	rec := &recorder{}
	g, clk := newGroup(t, ratelimit.GroupConfig{Limit: ratelimit.Config{Name: "api", Rate: 1, Burst: 1, Observer: rec}})
	if err := g.Do(context.Background(), "t1", func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	err := g.Do(context.Background(), "t1", func(context.Context) error { t.Error("op ran"); return nil })
	var le *ratelimit.LimitError
	if !errors.As(err, &le) || le.Key != "t1" || le.Name != "api" || le.Wait != time.Second {
		t.Fatalf("Do over the limit = %v, want a *LimitError for api key t1, Wait 1s", err)
	}
	if want := "ratelimit: rate limit exceeded (api, key t1, retry after 1s)"; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
	evs := rec.events()
	if len(evs) != 1 || evs[0].Key != "t1" || evs[0].Name != "api" {
		t.Fatalf("events = %+v, want one rejection with Key t1 and Name api", evs)
	}
	done := make(chan error, 1)
	go func() { done <- g.Wait(context.Background(), "t1") }()
	if err := clk.BlockUntil(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if err := <-done; err != nil {
		t.Fatalf("Wait = %v", err)
	}
	if err := g.Wait(deadlineCtx{context.Background(), clk.Now().Add(time.Millisecond)}, "t1"); !errors.Is(err, ratelimit.ErrLimited) {
		t.Fatalf("Wait that cannot fit the deadline = %v, want ErrLimited", err)
	}
}

// A key whose bucket has been full for IdleTimeout is evicted when a new key
// is added; a key in use is not.
func TestGroupIdleEviction(t *testing.T) {
	g, clk := newGroup(t, ratelimit.GroupConfig{Limit: ratelimit.Config{Rate: 1, Period: time.Minute, Burst: 1}, IdleTimeout: 4 * time.Minute})
	g.Allow("idle") // bucket full again at 1m
	clk.Advance(4*time.Minute + 30*time.Second)
	g.Allow("busy") // bucket full at 5m30s
	clk.Advance(time.Minute)
	g.Allow("new") // sweep: idle full since 1m (5m30s ago), busy full for 0s
	if n := g.Len(); n != 2 {
		t.Fatalf("Len() = %d after the sweep, want 2 (idle evicted)", n)
	}
	// Evicting a full bucket loses nothing: idle gets exactly Burst again.
	if !g.Allow("idle") || g.Allow("idle") {
		t.Fatal("an evicted key did not come back with exactly a full bucket")
	}
}

// At MaxKeys, the buckets closest to full go first.
func TestGroupMaxKeysEvictsFullest(t *testing.T) {
	g, clk := newGroup(t, ratelimit.GroupConfig{Limit: ratelimit.Config{Rate: 1, Period: time.Hour, Burst: 10}, MaxKeys: 4})
	for i, cost := range []int{5, 1, 9, 7} { // k1 is the fullest
		g.AllowN("k"+strconv.Itoa(i), clk.Now(), cost)
	}
	g.Allow("k4")
	if n := g.Len(); n != 4 {
		t.Fatalf("Len() = %d, want MaxKeys 4", n)
	}
	// k1 was evicted: it comes back with a full bucket of 10.
	if r := g.AllowN("k1", clk.Now(), 10); !r.Allowed {
		t.Fatalf("AllowN(k1, 10) = %+v, want a fresh bucket", r)
	}
	// k2 kept its state: 1 token left.
	if r := g.AllowN("k2", clk.Now(), 2); r.Allowed || r.Remaining != 1 {
		t.Fatalf("AllowN(k2, 2) = %+v, want refused with 1 remaining", r)
	}
}

// Many goroutines on a few keys while new keys keep sweeping the group
// (IdleTimeout 1 ns: every addition sweeps, evicting each full bucket as it
// is being used): no key ever passes more than its limit, so evictions lose
// nothing. The clock moves 1 ms at a time, and each step refills a whole
// bucket (Burst 5 at 1,000,000/s), so each key may pass 5 times per step.
func TestGroupConcurrentSafe(t *testing.T) {
	g, clk := newGroup(t, ratelimit.GroupConfig{Limit: ratelimit.Config{Rate: 1_000_000, Burst: 5}, IdleTimeout: time.Nanosecond})
	const workers, steps, hot = 6, 300, 3
	var (
		mu      sync.Mutex
		allowed = map[string]int{}
		wg      sync.WaitGroup
	)
	stop := make(chan struct{})
	progress := make(chan struct{}) // a worker made a round of calls
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			local := map[string]int{}
			for i := 0; ; i++ {
				select {
				case <-stop:
					mu.Lock()
					for k, n := range local {
						allowed[k] += n
					}
					mu.Unlock()
					return
				default:
				}
				for j := range 20 {
					key := "hot" + strconv.Itoa(j%hot)
					if g.Allow(key) {
						local[key]++
					}
				}
				g.Allow("cold" + strconv.Itoa(w) + "-" + strconv.Itoa(i)) // a new key: a sweep
				select {
				case progress <- struct{}{}:
				case <-stop:
				}
			}
		})
	}
	for i := 0; i < steps; i++ {
		for range workers { // the workers call between steps
			<-progress
		}
		clk.Advance(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	for i := 0; i < hot; i++ {
		key := "hot" + strconv.Itoa(i)
		if n, limit := allowed[key], 5*(steps+1); n > limit {
			t.Errorf("key %s passed %d times in %d steps with Burst 5, limit %d", key, n, steps+1, limit)
		} else if n < steps {
			t.Errorf("key %s passed only %d times in %d steps: the test did not exercise the limit", key, n, steps+1)
		}
	}
}

type tenantKey struct{}

// Policy makes a Group a layer of bulwark.Compose, keyed by the call's
// context.
func TestGroupPolicy(t *testing.T) {
	g, _ := newGroup(t, ratelimit.GroupConfig{Limit: ratelimit.Config{Rate: 1, Period: time.Hour, Burst: 1}})
	p := bulwark.Compose(g.Policy(func(ctx context.Context) string {
		s, _ := ctx.Value(tenantKey{}).(string)
		return s
	}))
	call := func(tenant string) error {
		ctx := context.WithValue(context.Background(), tenantKey{}, tenant)
		return p.Do(ctx, func(context.Context) error { return nil })
	}
	if err := call("acme"); err != nil {
		t.Fatal(err)
	}
	var le *ratelimit.LimitError
	if err := call("acme"); !errors.As(err, &le) || le.Key != "acme" {
		t.Fatalf("second call of acme = %v, want a *LimitError for key acme", err)
	}
	if err := call("globex"); err != nil {
		t.Fatalf("another tenant = %v", err)
	}
}
