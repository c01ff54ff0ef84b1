// Package base holds the helpers that every bulwark component uses and that
// are not part of the shared vocabulary of package bulwark: defaulting a nil
// Clock, sleeping on a Clock, and passing an event with its context.
package base

import (
	"context"
	"time"

	"github.com/bulwark-go/bulwark"
)

// ClockOrWall returns c, or bulwark.WallClock() when c is nil; components
// call it once in New.
func ClockOrWall(c bulwark.Clock) bulwark.Clock {
	if c == nil {
		return bulwark.WallClock()
	}
	return c
}

// Sleep waits for d on clk, or until ctx is done. It returns nil after a full
// wait and ctx.Err() otherwise. A d of zero or less returns at once, with
// ctx.Err().
func Sleep(ctx context.Context, clk bulwark.Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := clk.NewTimer(d)
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	}
}

// ObserveContext passes e to o, with ctx when o is a
// bulwark.ContextObserver. o must not be nil: components check for a nil
// Observer first, so that no event is built for nobody.
func ObserveContext(ctx context.Context, o bulwark.Observer, e bulwark.Event) {
	if co, ok := o.(bulwark.ContextObserver); ok {
		co.ObserveContext(ctx, e)
		return
	}
	o.Observe(e)
}

// WithTimeout returns a context canceled after d on clk. With the wall clock
// (wall true) it carries a real deadline, so that dialers and HTTP clients
// see it; with another clock, its cause after d is
// context.DeadlineExceeded.
func WithTimeout(parent context.Context, clk bulwark.Clock, wall bool, d time.Duration) (context.Context, context.CancelFunc) {
	if wall {
		return context.WithTimeout(parent, d)
	}
	ctx, cancel := context.WithCancelCause(parent)
	t := clk.AfterFunc(d, func() { cancel(context.DeadlineExceeded) })
	return ctx, func() {
		t.Stop()
		cancel(context.Canceled)
	}
}
