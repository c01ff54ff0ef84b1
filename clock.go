package bulwark

import "time"

// Clock is the time source of every time-based component. Each Config takes a
// Clock where nil means the wall clock; tests pass the fake clock of package
// bulwarktest and advance it by hand. Implementations are safe for concurrent
// use.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// Since returns the time elapsed since t, monotonic where t carries a
	// monotonic reading.
	Since(t time.Time) time.Duration
	// NewTimer returns a Timer that sends the time on its channel after d.
	NewTimer(d time.Duration) Timer
	// AfterFunc returns a Timer that calls f after d. Its C is nil.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is the part of *time.Timer that components use.
type Timer interface {
	// C returns the channel on which the firing time is delivered; nil for a
	// timer made by AfterFunc.
	C() <-chan time.Time
	// Stop prevents the timer from firing. It returns false if the timer
	// had already fired or been stopped.
	Stop() bool
	// Reset changes the timer to fire after d. It returns true if the timer
	// had been active.
	Reset(d time.Duration) bool
}

// WallClock returns the Clock of the time package. It is what a nil Clock in
// any Config means.
func WallClock() Clock { return wallClock{} }

type wallClock struct{}

func (wallClock) Now() time.Time                  { return time.Now() }
func (wallClock) Since(t time.Time) time.Duration { return time.Since(t) }
func (wallClock) NewTimer(d time.Duration) Timer  { return wallTimer{time.NewTimer(d)} }
func (wallClock) AfterFunc(d time.Duration, f func()) Timer {
	return wallTimer{time.AfterFunc(d, f)}
}

type wallTimer struct{ t *time.Timer }

func (w wallTimer) C() <-chan time.Time        { return w.t.C }
func (w wallTimer) Stop() bool                 { return w.t.Stop() }
func (w wallTimer) Reset(d time.Duration) bool { return w.t.Reset(d) }
