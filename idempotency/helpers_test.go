package idempotency_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/idempotency"
)

// newStore returns a MemoryStore on clk, closed when the test ends. Its
// janitor is off, so that the only timers on clk are the engine's.
func newStore(t testing.TB, clk bulwark.Clock) *idempotency.MemoryStore {
	t.Helper()
	s, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{Clock: clk, JanitorInterval: -1})
	if err != nil {
		t.Fatalf("NewMemoryStore: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newEngine returns an Engine over st with cfg's other fields.
func newEngine(t testing.TB, st idempotency.Store, clk bulwark.Clock, cfg idempotency.Config) *idempotency.Engine {
	t.Helper()
	cfg.Store, cfg.Clock = st, clk
	e, err := idempotency.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

func fakeClock() *bulwarktest.Clock { return bulwarktest.NewClock(time.Time{}) }

// events records the kinds and reasons of the events it observes.
type events struct {
	mu  sync.Mutex
	all []bulwark.Event
}

func (o *events) Observe(e bulwark.Event) {
	o.mu.Lock()
	o.all = append(o.all, e)
	o.mu.Unlock()
}

// has reports whether an event satisfies f.
func (o *events) has(f func(bulwark.Event) bool) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, e := range o.all {
		if f(e) {
			return true
		}
	}
	return false
}

// count returns how many events of kind were seen, with the reason if it is
// not empty.
func (o *events) count(kind bulwark.EventKind, reason string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, e := range o.all {
		if e.Kind == kind && (reason == "" || e.Reason == reason) {
			if e.Component != bulwark.ComponentIdempotency {
				panic("event of component " + e.Component)
			}
			n++
		}
	}
	return n
}

var errOutage = errors.New("store down")

// faultyStore wraps a Store and fails the calls it is told to fail, and
// counts and gates Claims.
type faultyStore struct {
	idempotency.Store
	failClaim    atomic.Bool
	failComplete atomic.Bool
	failExtend   atomic.Pointer[error] // if set, Extend returns this error
	extended     chan error            // if not nil, receives what each Extend returns
	completes    atomic.Int64
	releases     atomic.Int64
	claims       atomic.Int64
	inClaim      atomic.Int64
	maxInClaim   atomic.Int64
	mangle       func([]byte) []byte // if not nil, rewrites the values stored
	gate         chan struct{}       // if not nil, Claim waits for it to close
	entered      chan struct{}       // if not nil, receives once per Claim entered
}

func (s *faultyStore) Claim(ctx context.Context, key string, fp []byte, lease time.Duration) (idempotency.Claim, error) {
	s.claims.Add(1)
	n := s.inClaim.Add(1)
	defer s.inClaim.Add(-1)
	for {
		m := s.maxInClaim.Load()
		if n <= m || s.maxInClaim.CompareAndSwap(m, n) {
			break
		}
	}
	if s.entered != nil {
		s.entered <- struct{}{}
	}
	if s.gate != nil {
		<-s.gate
	}
	if s.failClaim.Load() {
		return idempotency.Claim{}, errOutage
	}
	return s.Store.Claim(ctx, key, fp, lease)
}

func (s *faultyStore) Extend(ctx context.Context, key string, token uint64, lease time.Duration) error {
	var err error
	if p := s.failExtend.Load(); p != nil {
		err = *p
	} else {
		err = s.Store.Extend(ctx, key, token, lease)
	}
	if s.extended != nil {
		s.extended <- err
	}
	return err
}

func (s *faultyStore) Release(ctx context.Context, key string, token uint64) error {
	s.releases.Add(1)
	return s.Store.Release(ctx, key, token)
}

func (s *faultyStore) Complete(ctx context.Context, key string, token uint64, value []byte, retention time.Duration) error {
	s.completes.Add(1)
	if s.failComplete.Load() {
		return errOutage
	}
	if s.mangle != nil {
		value = s.mangle(value)
	}
	return s.Store.Complete(ctx, key, token, value, retention)
}

// waitForGoroutines waits until n goroutines are blocked with every one of
// frames in their stacks: a state reached, read from the runtime, rather
// than a guess at how long reaching it takes. It fails the test after a
// minute.
func waitForGoroutines(t *testing.T, n int, frames ...string) {
	t.Helper()
	if got, ok := goroutinesReached(n, frames...); !ok {
		t.Fatalf("%d goroutines in %q after a minute, want %d", got, frames, n)
	}
}

// goroutinesReached is waitForGoroutines for a goroutine other than the
// test's: it reports how many it saw, and false if they were fewer than n
// after a minute.
func goroutinesReached(n int, frames ...string) (int, bool) {
	deadline := time.Now().Add(time.Minute)
	buf := make([]byte, 1<<20)
	for {
		m := runtime.Stack(buf, true)
		if m == len(buf) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		got := 0
		for _, g := range strings.Split(string(buf[:m]), "\n\n") {
			all := true
			for _, f := range frames {
				all = all && strings.Contains(g, f)
			}
			if all {
				got++
			}
		}
		if got >= n {
			return got, true
		}
		if time.Now().After(deadline) {
			return got, false
		}
		time.Sleep(time.Millisecond)
	}
}
