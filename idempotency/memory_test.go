package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/idempotencytest"
	"github.com/stretchr/testify/require"
)

func TestMemoryStoreConformance(t *testing.T) {
	idempotencytest.RunStore(t, func(t *testing.T, clk bulwark.Clock) idempotency.Store {
		s, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{Clock: clk})
		if err != nil {
			t.Fatalf("NewMemoryStore: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestNewMemoryStoreValidates(t *testing.T) {
	tests := []struct {
		name string
		cfg  idempotency.MemoryConfig
		want string
	}{
		{"negative max", idempotency.MemoryConfig{MaxEntries: -1}, "MaxEntries -1 is negative"},
		{"negative shards", idempotency.MemoryConfig{Shards: -2}, "Shards -2 is negative"},
		{"more shards than entries", idempotency.MemoryConfig{MaxEntries: 4, Shards: 8}, "exceeds MaxEntries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := idempotency.NewMemoryStore(tt.cfg)
			if !errors.Is(err, idempotency.ErrInvalidConfig) || s != nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewMemoryStore(%+v) = %v, %v; want an error containing %q", tt.cfg, s, err, tt.want)
			}
		})
	}
}

func TestMemoryStoreArguments(t *testing.T) {
	s := newStore(t, fakeClock())
	ctx := t.Context()
	if _, err := s.Claim(ctx, "k", nil, 0); err == nil {
		t.Errorf("Claim with a zero lease: error = nil, want one")
	}
	c, err := s.Claim(ctx, "k", nil, time.Second)
	require.NoError(t, err)
	if err := s.Complete(ctx, "k", c.Token, nil, -time.Second); err == nil {
		t.Errorf("Complete with a negative retention: error = nil, want one")
	}
	require.NoError(t, s.Complete(ctx, "k", c.Token, nil, time.Second))
}

func TestMemoryStoreFull(t *testing.T) {
	clk := fakeClock()
	s, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{Clock: clk, MaxEntries: 4, Shards: 1, JanitorInterval: -1})
	require.NoError(t, err)
	defer s.Close()
	ctx := t.Context()
	for i := range 4 {
		c, err := s.Claim(ctx, fmt.Sprint("k", i), nil, time.Minute)
		require.NoError(t, err)
		if i < 2 {
			require.NoError(t, s.Complete(ctx, fmt.Sprint("k", i), c.Token, []byte("v"), time.Hour))
		}
	}
	if _, err := s.Claim(ctx, "k4", nil, time.Minute); !errors.Is(err, idempotency.ErrFull) {
		t.Fatalf("Claim of a fifth key in a store of 4 = %v, want ErrFull", err)
	}
	// An existing key is still answered.
	if c, err := s.Claim(ctx, "k0", nil, time.Minute); err != nil || c.Won || !c.Record.Completed {
		t.Fatalf("Claim(k0) of a full store = %+v, %v; want its record", c, err)
	}
	// Once the two in-flight leases pass, their room is reclaimed.
	clk.Advance(time.Minute)
	if c, err := s.Claim(ctx, "k4", nil, time.Minute); err != nil || !c.Won {
		t.Fatalf("Claim(k4) after leases passed = %+v, %v; want Won", c, err)
	}
	if n := s.Len(); n != 3 {
		t.Errorf("Len() = %d, want 3 (two completed, one new)", n)
	}
}

func TestMemoryStoreJanitor(t *testing.T) {
	clk := fakeClock()
	s, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{Clock: clk, JanitorInterval: time.Minute})
	require.NoError(t, err)
	if n := clk.Timers(); n != 0 {
		t.Fatalf("%d timers pending after NewMemoryStore, want 0: only Start starts the janitor", n)
	}
	ctx := t.Context()
	require.NoError(t, s.Start(ctx))
	if err := s.Start(ctx); !errors.Is(err, idempotency.ErrStarted) {
		t.Fatalf("second Start = %v, want ErrStarted", err)
	}
	done, err := s.Claim(ctx, "completed", nil, time.Hour)
	require.NoError(t, err)
	require.NoError(t, s.Complete(ctx, "completed", done.Token, []byte("v"), 3*time.Minute))
	_, err = s.Claim(ctx, "in flight", nil, 90*time.Second)
	require.NoError(t, err)
	tests := []struct {
		advance time.Duration
		wantLen int
	}{
		{time.Minute, 2},      // nothing expired yet
		{time.Minute, 1},      // the lease ended at 1m30s
		{time.Minute, 0},      // retention ended at 3m
		{10 * time.Minute, 0}, // the janitor keeps running
	}
	for i, tt := range tests {
		clk.Advance(tt.advance)
		if n := s.Len(); n != tt.wantLen {
			t.Fatalf("step %d: Len() = %d, want %d", i, n, tt.wantLen)
		}
	}
	if n := clk.Timers(); n != 1 {
		t.Fatalf("%d timers pending, want the janitor's 1", n)
	}
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())
	if n := clk.Timers(); n != 0 {
		t.Errorf("%d timers pending after Close, want 0", n)
	}
	if _, err := s.Claim(ctx, "k", nil, time.Minute); !errors.Is(err, idempotency.ErrClosed) {
		t.Errorf("Claim after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Get(ctx, "k"); !errors.Is(err, idempotency.ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}
	if err := s.Start(ctx); !errors.Is(err, idempotency.ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
}

// Without Start there is no janitor, and expired records still read as
// absent; the end of Start's ctx stops the janitor.
func TestMemoryStoreJanitorLifecycle(t *testing.T) {
	clk := fakeClock()
	s, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{Clock: clk, JanitorInterval: time.Minute})
	require.NoError(t, err)
	defer s.Close()
	c, err := s.Claim(t.Context(), "k", nil, time.Minute)
	require.NoError(t, err)
	require.NoError(t, s.Complete(t.Context(), "k", c.Token, []byte("v"), time.Minute))
	clk.Advance(2 * time.Minute)
	if _, err := s.Get(t.Context(), "k"); !errors.Is(err, idempotency.ErrNotFound) {
		t.Fatalf("Get of an expired record without a janitor = %v, want ErrNotFound", err)
	}
	if n := s.Len(); n != 1 {
		t.Fatalf("Len() = %d without a janitor, want the expired record still held", n)
	}
	ctx, cancel := context.WithCancel(t.Context())
	require.NoError(t, s.Start(ctx))
	clk.Advance(time.Minute)
	if n := s.Len(); n != 0 {
		t.Fatalf("Len() = %d after a sweep, want 0", n)
	}
	cancel()
	require.Eventually(t, func() bool { return clk.Timers() == 0 }, 10*time.Second, time.Millisecond, "janitor still scheduled after ctx ended")
}

// The janitor on the wall clock, sweeping while the store is busy.
func TestMemoryStoreJanitorConcurrentSafe(t *testing.T) {
	s, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{JanitorInterval: time.Millisecond, Shards: 4})
	require.NoError(t, err)
	require.NoError(t, s.Start(t.Context()))
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for i := range 2000 {
				key := fmt.Sprint(w, "-", i%50)
				c, err := s.Claim(ctx, key, nil, time.Microsecond)
				if err != nil {
					t.Errorf("Claim: %v", err)
					return
				}
				if c.Won {
					// May be fenced: the lease is 1µs.
					_ = s.Complete(ctx, key, c.Token, []byte("v"), time.Microsecond)
				}
				_, _ = s.Get(ctx, key)
			}
		}()
	}
	wg.Wait()
	require.NoError(t, s.Close())
}
