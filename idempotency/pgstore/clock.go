package pgstore

import (
	"context"
	"time"

	"github.com/bulwark-go/bulwark"
)

// clockOrWall returns c, or the wall clock when c is nil.
func clockOrWall(c bulwark.Clock) bulwark.Clock {
	if c == nil {
		return bulwark.WallClock()
	}
	return c
}

// clockSleep waits for d on clk, or until ctx is done; it returns ctx.Err() when
// ctx ends the wait first.
func clockSleep(ctx context.Context, clk bulwark.Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
