package ratelimit_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/ratelimit"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// deadlineCtx is a context whose deadline is on a fake clock: it reports
// the deadline but never ends by itself.
type deadlineCtx struct {
	context.Context
	dl time.Time
}

func (c deadlineCtx) Deadline() (time.Time, bool) { return c.dl, true }

// recorder is an Observer that keeps the events it sees.
type recorder struct {
	mu  sync.Mutex
	evs []bulwark.Event
}

func (r *recorder) Observe(e bulwark.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, e)
	r.mu.Unlock()
}

func (r *recorder) events() []bulwark.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]bulwark.Event(nil), r.evs...)
}

func newLimiter(t testing.TB, cfg ratelimit.Config) (*ratelimit.Limiter, *bulwarktest.Clock) {
	t.Helper()
	clk := bulwarktest.NewClock(t0)
	if cfg.Clock == nil {
		cfg.Clock = clk
	}
	l, err := ratelimit.New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	return l, clk
}
