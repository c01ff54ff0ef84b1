package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/breaker"
	"github.com/bulwark-go/bulwark/bulwarktest"
)

func newGroup(t *testing.T, cfg breaker.GroupConfig) (*breaker.Group, *bulwarktest.Clock) {
	t.Helper()
	clk := bulwarktest.NewClock(time.Time{})
	cfg.Breaker.Clock = clk
	g, err := breaker.NewGroup(cfg)
	if err != nil {
		t.Fatalf("NewGroup(%+v) = %v", cfg, err)
	}
	return g, clk
}

func TestGroupGet(t *testing.T) {
	g, _ := newGroup(t, breaker.GroupConfig{Breaker: breaker.Config{Name: "api", ConsecutiveFailures: 1}})
	a := g.Get("a")
	if g.Get("a") != a {
		t.Fatalf("Get(%q) twice returned two breakers", "a")
	}
	if a.Name() != "api/a" {
		t.Errorf("Get(%q).Name() = %q, want %q", "a", a.Name(), "api/a")
	}
	errDown := errors.New("down")
	if err := g.Do(context.Background(), "a", func(context.Context) error { return errDown }); !errors.Is(err, errDown) {
		t.Fatalf("Do(a) = %v, want %v", err, errDown)
	}
	if err := g.Do(context.Background(), "a", func(context.Context) error { return nil }); !errors.Is(err, breaker.ErrOpen) {
		t.Errorf("Do(a) after its failure = %v, want ErrOpen", err)
	}
	if err := g.Do(context.Background(), "b", func(context.Context) error { return nil }); err != nil {
		t.Errorf("Do(b) = %v, want nil: keys do not share a breaker", err)
	}
	if n := g.Len(); n != 2 {
		t.Errorf("Len() = %d, want 2", n)
	}
	g.Remove("a")
	if g.Len() != 1 || g.Get("a") == a || g.Get("a").State() != breaker.Closed {
		t.Errorf("after Remove(a): Len() = %d and Get(a) is the old breaker or not closed", g.Len())
	}
}

func TestGroupEviction(t *testing.T) {
	tests := []struct {
		name  string
		cfg   breaker.GroupConfig
		steps []string // "get KEY", "trip KEY", "wait DURATION"
		want  string   // keys present at the end, sorted, that the test probes
		probe []string
	}{
		{
			name:  "least recently used goes when full",
			cfg:   breaker.GroupConfig{MaxKeys: 2, IdleTimeout: time.Hour},
			steps: []string{"get a", "wait 20m", "get b", "wait 20m", "get b", "get c"},
			probe: []string{"a", "b", "c"},
			want:  "b c",
		},
		{
			name:  "an open breaker outlives a closed one",
			cfg:   breaker.GroupConfig{MaxKeys: 2, IdleTimeout: time.Hour},
			steps: []string{"trip a", "wait 20m", "get b", "wait 20m", "get b", "get c"},
			probe: []string{"a", "b", "c"},
			want:  "a c",
		},
		{
			name:  "idle breakers go when a key is added",
			cfg:   breaker.GroupConfig{IdleTimeout: 10 * time.Minute},
			steps: []string{"get a", "get b", "wait 5m", "get x", "wait 3m", "get b", "wait 7m", "get y"},
			probe: []string{"a", "b", "x", "y"},
			want:  "b x y",
		},
		{
			name:  "used breakers stay",
			cfg:   breaker.GroupConfig{IdleTimeout: 10 * time.Minute},
			steps: []string{"get a", "wait 4m", "get a", "get x", "wait 4m", "get a", "get y", "wait 4m", "get a", "get z"},
			probe: []string{"a", "x", "y", "z"},
			want:  "a x y z",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Breaker.ConsecutiveFailures = 1
			g, clk := newGroup(t, cfg)
			kept := map[string]*breaker.Breaker{}
			for _, s := range tt.steps {
				verb, arg, _ := strings.Cut(s, " ")
				switch verb {
				case "get":
					kept[arg] = g.Get(arg)
				case "trip":
					kept[arg] = g.Get(arg)
					fail(kept[arg])
				case "wait":
					d, err := time.ParseDuration(arg)
					if err != nil {
						t.Fatal(err)
					}
					clk.Advance(d)
				}
			}
			// A key is present if Get returns the breaker handed out last.
			var present []string
			for _, k := range tt.probe {
				if kept[k] != nil && g.Peek(k) == kept[k] {
					present = append(present, k)
				}
			}
			if got := strings.Join(present, " "); got != tt.want {
				t.Errorf("after %v: keys %q, want %q", tt.steps, got, tt.want)
			}
		})
	}
}

func TestNewGroupInvalid(t *testing.T) {
	tests := []struct {
		name string
		cfg  breaker.GroupConfig
		want string
	}{
		{"negative max keys", breaker.GroupConfig{MaxKeys: -1}, "negative MaxKeys -1"},
		{"negative idle timeout", breaker.GroupConfig{IdleTimeout: -time.Second}, "negative IdleTimeout -1s"},
		{"bad breaker config", breaker.GroupConfig{Breaker: breaker.Config{FailureRate: 2, WindowCalls: 1}}, "FailureRate 2 outside"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := breaker.NewGroup(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewGroup(%+v) = %v, want an error containing %q", tt.cfg, err, tt.want)
			}
		})
	}
}

func TestGroupConcurrentSafe(t *testing.T) {
	defer breaker.CheckNoLeak(t)()
	g, clk := newGroup(t, breaker.GroupConfig{MaxKeys: 16, IdleTimeout: time.Minute, Breaker: breaker.Config{ConsecutiveFailures: 3, OpenDuration: time.Second}})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				key := fmt.Sprintf("k%d", (w*7+i)%40)
				_ = g.Do(context.Background(), key, func(context.Context) error {
					if i%3 == 0 {
						return errors.New("x")
					}
					return nil
				})
				if i%50 == 0 {
					clk.Advance(time.Second)
				}
				if i%97 == 0 {
					g.Remove(key)
				}
			}
		}()
	}
	wg.Wait()
	if n := g.Len(); n < 1 || n > 16 {
		t.Errorf("Len() = %d after concurrent use, want in [1, 16]", n)
	}
}

func endpoints(addrs ...string) []bulwark.Endpoint {
	eps := make([]bulwark.Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = bulwark.Endpoint{Addr: a}
	}
	return eps
}

// Members keep their breakers, idle or not and however many they are;
// SetEndpoints forgets every other key; a breaker keeps its state while its
// endpoint stays a member.
func TestGroupSetEndpoints(t *testing.T) {
	g, clk := newGroup(t, breaker.GroupConfig{MaxKeys: 1, IdleTimeout: time.Minute, Breaker: breaker.Config{ConsecutiveFailures: 1, OpenDuration: 24 * time.Hour}})
	other := g.Get("other")
	if err := g.SetEndpoints(endpoints("a:1", "b:1", "c:1")); err != nil {
		t.Fatal(err)
	}
	if g.Len() != 3 || g.Peek("other") != nil {
		t.Fatalf("after SetEndpoints(a, b, c): Len() = %d, other kept: %v; want 3 members and other gone", g.Len(), g.Peek("other") == other)
	}
	a := g.Peek("a:1")
	if a == nil {
		t.Fatal("Peek(a) = nil after SetEndpoints, want its breaker")
	}
	fail(a)
	// Long idle, and many other keys beyond MaxKeys: members stay.
	clk.Advance(time.Hour)
	for i := range 10 {
		g.Get(fmt.Sprint("x", i))
		clk.Advance(time.Minute)
	}
	for _, k := range []string{"a:1", "b:1", "c:1"} {
		if g.Peek(k) == nil {
			t.Errorf("member %s evicted, want it kept", k)
		}
	}
	if n := g.Len(); n != 3+1 {
		t.Errorf("Len() = %d, want the 3 members and MaxKeys (1) other key", n)
	}
	// b leaves, d joins: a keeps its (open) breaker, b and the others go.
	if err := g.SetEndpoints(endpoints("a:1", "c:1", "d:1")); err != nil {
		t.Fatal(err)
	}
	if g.Peek("a:1") != a || a.State() != breaker.Open {
		t.Error("a's breaker was replaced or reset while a stayed a member")
	}
	if g.Peek("b:1") != nil || g.Peek("x9") != nil || g.Peek("d:1") == nil || g.Len() != 3 {
		t.Errorf("after SetEndpoints(a, c, d): Len() = %d, b kept: %v, x9 kept: %v, d made: %v; want 3, false, false, true",
			g.Len(), g.Peek("b:1") != nil, g.Peek("x9") != nil, g.Peek("d:1") != nil)
	}
	// A member removed by hand comes back as a member.
	g.Remove("c:1")
	c := g.Get("c:1")
	clk.Advance(time.Hour)
	g.Get("y")
	g.Get("z")
	if g.Peek("c:1") != c {
		t.Error("member c, removed and got again, was evicted")
	}
	// No members: every key is evictable again.
	if err := g.SetEndpoints(nil); err != nil || g.Len() != 0 {
		t.Errorf("SetEndpoints(nil) = %v, Len() = %d; want nil, 0", err, g.Len())
	}
}

func TestGroupSetEndpointsInvalid(t *testing.T) {
	g, _ := newGroup(t, breaker.GroupConfig{})
	if err := g.SetEndpoints(endpoints("a:1")); err != nil {
		t.Fatal(err)
	}
	a := g.Peek("a:1")
	for _, eps := range [][]bulwark.Endpoint{
		endpoints("b:1", ""),
		endpoints("b:1", "b:1"),
		{{Addr: "b:1", Weight: -1}},
	} {
		err := g.SetEndpoints(eps)
		if !errors.Is(err, bulwark.ErrInvalidEndpoint) {
			t.Errorf("SetEndpoints(%v) = %v, want ErrInvalidEndpoint", eps, err)
		}
		if g.Peek("a:1") != a || g.Peek("b:1") != nil {
			t.Errorf("SetEndpoints(%v) failed but changed the members", eps)
		}
	}
}

// Churning 100,000 endpoints through a group, ten at a time, leaves it
// holding the ten current ones: memory follows the fleet.
func TestGroupSetEndpointsChurn(t *testing.T) {
	g, clk := newGroup(t, breaker.GroupConfig{})
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	const total, size = 100_000, 10
	eps := make([]bulwark.Endpoint, size)
	for i := 0; i+size <= total; i += size / 2 { // half the fleet replaced each time
		for j := range eps {
			eps[j] = bulwark.Endpoint{Addr: fmt.Sprintf("10.%d.%d.%d:80", (i+j)>>16, (i+j)>>8&255, (i+j)&255)}
		}
		if err := g.SetEndpoints(eps); err != nil {
			t.Fatal(err)
		}
		g.Get(eps[0].Addr)
		if n := g.Len(); n != size {
			t.Fatalf("Len() = %d after SetEndpoints of %d endpoints, want %d", n, size, size)
		}
		clk.Advance(time.Second)
	}
	if n := breaker.GroupEntries(g); n != size {
		t.Errorf("the group's map holds %d entries, want %d", n, size)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 4<<20 {
		t.Errorf("heap grew by %d bytes over the churn, want it flat (under 4 MiB; 100,000 kept breakers would take far more)", grown)
	}
}
