package bulwarkgrpc

import "github.com/bulwark-go/bulwark"

// clockOrWall returns c, or the wall clock when c is nil.
func clockOrWall(c bulwark.Clock) bulwark.Clock {
	if c == nil {
		return bulwark.WallClock()
	}
	return c
}
