package bulwark

import (
	"context"
	"reflect"
	"sync"
)

// Policy guards a call. Do runs op, possibly several times, possibly not at
// all, and returns op's error or an error of its own that explains why op did
// not run or was given up on. Implementations pass their own context (derived
// from ctx) to op, never store ctx, and are safe for concurrent use.
//
// *retry.Policy, *retry.Hedge and *breaker.Breaker satisfy Policy.
type Policy interface {
	Do(ctx context.Context, op func(context.Context) error) error
}

// PolicyFunc adapts a function to a Policy, as http.HandlerFunc does for
// handlers.
type PolicyFunc func(ctx context.Context, op func(context.Context) error) error

// Do calls f(ctx, op).
func (f PolicyFunc) Do(ctx context.Context, op func(context.Context) error) error {
	return f(ctx, op)
}

// Compose returns one Policy that applies ps outermost first:
// Compose(retryPolicy, circuitBreaker).Do(ctx, op) retries calls that pass
// through the breaker. Nil entries are skipped, typed nils too (a nil
// *breaker.Breaker for a breaker turned off by configuration). Compose of nothing returns a
// Policy that runs op directly, and Compose of one Policy returns it as it is.
//
// A composed Policy allocates one small closure per call for each layer after
// the first, to carry op inward; a single layer adds nothing.
func Compose(ps ...Policy) Policy {
	layers := make([]Policy, 0, len(ps))
	for _, p := range ps {
		if !isNil(p) {
			layers = append(layers, p)
		}
	}
	switch len(layers) {
	case 0:
		return direct{}
	case 1:
		return layers[0]
	}
	return &chain{layers: layers}
}

// direct runs op with no guard.
type direct struct{}

func (direct) Do(ctx context.Context, op func(context.Context) error) error { return op(ctx) }

// chain is an immutable list of layers, outermost first.
type chain struct {
	layers []Policy // at least two
}

func (c *chain) Do(ctx context.Context, op func(context.Context) error) error {
	return c.run(ctx, 0, op)
}

// run runs layers[i:] around op. It allocates one closure per layer boundary,
// re-entered once per attempt by retrying layers and concurrently by hedges.
func (c *chain) run(ctx context.Context, i int, op func(context.Context) error) error {
	if i == len(c.layers)-1 {
		return c.layers[i].Do(ctx, op)
	}
	return c.layers[i].Do(ctx, func(ctx context.Context) error { return c.run(ctx, i+1, op) })
}

// Call runs op under p and returns op's value. The value is that of the first
// attempt that succeeded (a hedging policy may run several at once); when p
// returns an error, Call returns the zero T with it.
func Call[T any](ctx context.Context, p Policy, op func(context.Context) (T, error)) (T, error) {
	var (
		mu  sync.Mutex // guards out and set: hedged attempts may succeed together
		out T
		set bool
	)
	err := p.Do(ctx, func(ctx context.Context) error {
		v, err := op(ctx)
		if err == nil {
			mu.Lock()
			if !set {
				out, set = v, true
			}
			mu.Unlock()
		}
		return err
	})
	if err != nil {
		var zero T
		return zero, err
	}
	mu.Lock()
	defer mu.Unlock()
	return out, nil
}

// isNil reports whether v is nil or an interface holding a nil pointer, map,
// slice, channel or func. Compose and Observers call it once, when they build.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Chan, reflect.Func, reflect.Interface:
		return rv.IsNil()
	}
	return false
}
