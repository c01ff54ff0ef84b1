package redisrate

import (
	"context"

	"github.com/bulwark-go/bulwark"
)

// observeContext passes e to o, with ctx when o is a
// bulwark.ContextObserver.
func observeContext(ctx context.Context, o bulwark.Observer, e bulwark.Event) {
	if co, ok := o.(bulwark.ContextObserver); ok {
		co.ObserveContext(ctx, e)
		return
	}
	o.Observe(e)
}
