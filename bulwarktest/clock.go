// Package bulwarktest holds test helpers for code that uses bulwark: a fake
// [Clock] that tests advance by hand, so that time-based logic runs without
// sleeping and gives the same result every time. Pass it wherever a Config
// takes a [bulwark.Clock]:
//
//	clk := bulwarktest.NewClock(time.Time{}) // 2026-01-01T00:00:00Z
//	cb, err := breaker.New(breaker.Config{Clock: clk, ConsecutiveFailures: 1, OpenDuration: time.Second})
//	…
//	_ = cb.Do(ctx, failing)  // the breaker opens
//	clk.Advance(time.Second) // a second later, without sleeping, it lets a probe through
//
// [Clock.Advance] runs the timers that come due on the goroutine that calls
// it; [Clock.BlockUntil] waits until the code under test has armed its timers,
// so that a test advances the clock only once that code waits on it.
package bulwarktest

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/bulwark-go/bulwark"
)

var _ bulwark.Clock = (*Clock)(nil)

// Clock is a bulwark.Clock whose time moves only when Advance or Set is called.
// Timers fire in order of their deadlines, each seeing Now equal to its own
// deadline; a timer's channel receives that time, and an AfterFunc function
// runs on the goroutine that called Advance, with no lock held. A Clock is
// safe for concurrent use. Use NewClock; the zero Clock is not usable.
type Clock struct {
	mu      sync.Mutex
	cond    *sync.Cond // signalled when timers are added; uses mu
	now     time.Time  // guarded by mu
	timers  []*timer   // guarded by mu; pending timers, unordered
	nextSeq uint64     // guarded by mu; keeps timers of equal deadline in creation order
}

// NewClock returns a fake clock set to start; a zero start means
// 2026-01-01T00:00:00Z.
func NewClock(start time.Time) *Clock {
	if start.IsZero() {
		start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	c := &Clock{now: start}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Since returns Now().Sub(t).
func (c *Clock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// NewTimer returns a timer that fires when the clock reaches Now()+d. A d of
// zero or less fires at the next Advance, even Advance(0).
func (c *Clock) NewTimer(d time.Duration) bulwark.Timer {
	t := &timer{clock: c, ch: make(chan time.Time, 1)}
	c.schedule(t, d)
	return t
}

// AfterFunc returns a timer that calls f when the clock reaches Now()+d.
func (c *Clock) AfterFunc(d time.Duration, f func()) bulwark.Timer {
	t := &timer{clock: c, fn: f}
	c.schedule(t, d)
	return t
}

// Advance moves the clock forward by d, firing every timer whose deadline is
// reached, earliest first. Timers that firing functions create or reset
// within the window fire too. A negative d is treated as zero.
func (c *Clock) Advance(d time.Duration) {
	if d < 0 {
		d = 0
	}
	c.mu.Lock()
	target := c.now.Add(d)
	c.mu.Unlock()
	c.runUntil(target)
}

// Set moves the clock to t, firing due timers as Advance does. Moving the
// clock backwards fires nothing.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	if t.Before(c.now) {
		c.now = t
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.runUntil(t)
}

// Timers returns the number of pending timers.
func (c *Clock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// BlockUntil waits until at least n timers are pending, so that a test can be
// sure the code under test is waiting on the clock before it advances it. It
// returns ctx.Err() if ctx ends first.
func (c *Clock) BlockUntil(ctx context.Context, n int) error {
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.timers) < n {
		if err := ctx.Err(); err != nil {
			return err
		}
		c.cond.Wait()
	}
	return nil
}

func (c *Clock) runUntil(target time.Time) {
	for {
		c.mu.Lock()
		t := c.earliestLocked()
		if t == nil || t.when.After(target) {
			if target.After(c.now) {
				c.now = target
			}
			c.mu.Unlock()
			return
		}
		c.removeLocked(t)
		if t.when.After(c.now) {
			c.now = t.when
		}
		if t.fn == nil {
			// Sent under the lock, which cannot block (the channel has
			// room for one), so that a Stop or Reset never races with it
			// and never leaves a stale value behind.
			select {
			case t.ch <- c.now:
			default:
			}
			c.mu.Unlock()
			continue
		}
		c.mu.Unlock()
		t.fn()
	}
}

func (c *Clock) schedule(t *timer, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.scheduleLocked(t, d)
}

func (c *Clock) scheduleLocked(t *timer, d time.Duration) {
	if d < 0 {
		d = 0
	}
	t.when = c.now.Add(d)
	t.seq = c.nextSeq
	c.nextSeq++
	t.active = true
	c.timers = append(c.timers, t)
	c.cond.Broadcast()
}

func (c *Clock) earliestLocked() *timer {
	if len(c.timers) == 0 {
		return nil
	}
	sort.Slice(c.timers, func(i, j int) bool {
		a, b := c.timers[i], c.timers[j]
		if !a.when.Equal(b.when) {
			return a.when.Before(b.when)
		}
		return a.seq < b.seq
	})
	return c.timers[0]
}

func (c *Clock) removeLocked(t *timer) bool {
	for i, x := range c.timers {
		if x == t {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			t.active = false
			return true
		}
	}
	return false
}

type timer struct {
	clock  *Clock
	ch     chan time.Time // nil for AfterFunc timers
	fn     func()         // nil for channel timers
	when   time.Time      // guarded by clock.mu
	seq    uint64         // guarded by clock.mu
	active bool           // guarded by clock.mu
}

func (t *timer) C() <-chan time.Time { return t.ch }

func (t *timer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	if t.ch != nil {
		select { // as time.Timer since Go 1.23: no stale value after Stop
		case <-t.ch:
		default:
		}
	}
	return t.clock.removeLocked(t)
}

func (t *timer) Reset(d time.Duration) bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	was := t.clock.removeLocked(t)
	if t.ch != nil {
		select { // as time.Timer since Go 1.23: no stale value after Reset
		case <-t.ch:
		default:
		}
	}
	t.clock.scheduleLocked(t, d)
	return was
}
