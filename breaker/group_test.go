package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

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
