package bulwark

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"unsafe"

	"github.com/bulwark-go/bulwark/internal/compose"
)

// Policy guards a call. Do runs op, possibly several times, possibly not at
// all, and returns op's error or an error of its own that explains why op did
// not run or was given up on. Implementations pass their own context (derived
// from ctx) to op, never store ctx, and are safe for concurrent use.
//
// In this library, *retry.Policy, *retry.Hedge, *breaker.Breaker,
// *limit.Bulkhead, *limit.Limiter, *ratelimit.Limiter, *throttle.Policy and
// *timeout.Policy satisfy Policy.
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
// *breaker.Breaker for a breaker turned off by configuration), and composed
// entries are flattened: Compose(a, Compose(b, c)) is Compose(a, b, c).
// Compose of nothing returns a Policy that runs op directly, and Compose of
// one Policy returns it as it is.
//
// A composed call is one logical request, however many attempts its retry
// and hedge layers make: each retry budget (retry.Budget) that its layers
// spend from counts it once, in the outermost layer that uses that budget.
// Inner layers spend from it but do not count the request again, so a
// failing dependency sees at most (1 + the budget's ratio) times its normal
// load, plus the budget's reserve, whatever the order of the layers. (Only
// Compose knows the layers: a policy called by hand inside another's op
// counts its call as a request of its own.)
//
// A composed call allocates one frame, whatever the number of layers. The
// layers meet op through the context they pass to it, which must be derived
// from the one they were given, as Policy requires; a layer that runs op
// under an unrelated context gets an error instead of op's.
func Compose(ps ...Policy) Policy {
	var layers []Policy
	for _, p := range ps {
		switch {
		case isNil(p):
		case isChain(p):
			layers = append(layers, p.(*chain).layers...)
		default:
			layers = append(layers, p)
		}
	}
	switch len(layers) {
	case 0:
		return direct{}
	case 1:
		return layers[0]
	}
	c := &chain{
		layers: layers,
		spend:  make([]compose.Budgeted, len(layers)),
		steps:  make([]func(context.Context) error, len(layers)+1),
	}
	counted := map[unsafe.Pointer]bool{} // budgets that an outer layer deposits into
	for i, l := range layers {
		if b, ok := l.(compose.Budgeted); ok {
			if id := compose.BudgetID(b); id != nil {
				if counted[id] {
					c.spend[i] = b
				}
				counted[id] = true
			}
		}
	}
	for i := 1; i <= len(layers); i++ {
		c.steps[i] = func(ctx context.Context) error { return c.step(ctx, i) }
	}
	return c
}

func isChain(p Policy) bool {
	_, ok := p.(*chain)
	return ok
}

// direct runs op with no guard.
type direct struct{}

func (direct) Do(ctx context.Context, op func(context.Context) error) error { return op(ctx) }

// chain is an immutable list of layers, outermost first.
type chain struct {
	layers []Policy                      // at least two
	spend  []compose.Budgeted            // layers[i] when it must not deposit into its budget, which an outer layer counts; else nil
	steps  []func(context.Context) error // steps[i] runs layers[i:] and op; steps[0] is unused
}

// frame is one call of a chain. It is the context that the chain gives its
// outermost layer, so that the steps, which every call of the chain shares,
// find it again in the context that each layer passes to its op.
type frame struct {
	context.Context                             // the caller's
	c               *chain                      // the chain this is a call of: the key under which Value finds the frame
	op              func(context.Context) error // the operation, for Do
	call            runner                      // for Call: its *callFrame[T], which runs in place of op
}

// Value returns the frame for its chain, and defers to the caller's context
// for any other key.
func (f *frame) Value(key any) any {
	if key == any(f.c) {
		return f
	}
	return f.Context.Value(key)
}

// errLostFrame is the error of a composed call whose layer ran op under a
// context that is not derived from the one it was given.
var errLostFrame = Permanent(errors.New("bulwark: a composed Policy ran op with a context not derived from the one it was given"))

func (c *chain) Do(ctx context.Context, op func(context.Context) error) error {
	f := &frame{Context: ctx, c: c, op: op}
	return c.run(f, f, 0)
}

// step runs layers[i:] for the call whose frame ctx holds.
func (c *chain) step(ctx context.Context, i int) error {
	f, ok := ctx.(*frame)
	if !ok || f.c != c {
		if f, ok = ctx.Value(c).(*frame); !ok {
			return errLostFrame
		}
	}
	return c.run(f, ctx, i)
}

// run runs layers[i:] around the operation of f. A layer whose retry budget
// an outer layer deposits into runs without depositing.
func (c *chain) run(f *frame, ctx context.Context, i int) error {
	if i == len(c.layers) {
		if f.call != nil {
			return f.call.Run(ctx)
		}
		return f.op(ctx)
	}
	if b := c.spend[i]; b != nil {
		return compose.DoSpending(b, ctx, c.steps[i+1])
	}
	return c.layers[i].Do(ctx, c.steps[i+1])
}

// Call runs op under p and returns op's value. The value is that of the first
// attempt that succeeded (a hedging policy may run several at once); when p
// returns an error, Call returns the zero T with it.
//
// Call over a *breaker.Breaker or a *retry.Policy allocates nothing; over a
// composed Policy it allocates the one frame of the composed call; over any
// other Policy, two small objects.
func Call[T any](ctx context.Context, p Policy, op func(context.Context) (T, error)) (T, error) {
	var zero T
	if q, ok := p.(*chain); ok {
		cf := &callFrame[T]{op: op}
		cf.frame = frame{Context: ctx, c: q, call: cf}
		if err := q.run(&cf.frame, &cf.frame, 0); err != nil {
			return zero, err
		}
		return cf.result(), nil
	}
	if _, ok := p.(compose.Sync); ok {
		// The policy runs op on this goroutine and not after Do returns:
		// the closure, and out, can stay on this stack.
		var out T
		run := func(ctx context.Context) error {
			v, err := op(ctx)
			if err == nil {
				out = v
			}
			return err
		}
		if err := p.Do(ctx, compose.NoEscapeFunc(&run)); err != nil {
			return zero, err
		}
		return out, nil
	}
	cf := &callFrame[T]{op: op}
	if err := p.Do(ctx, cf.Run); err != nil {
		return zero, err
	}
	return cf.result(), nil
}

// runner is Call's operation: a generic function value would need a closure
// (for its dictionary); an interface holding a pointer needs none.
type runner interface {
	Run(ctx context.Context) error
}

// callFrame is Call's frame on the heap, where attempts may run at once.
type callFrame[T any] struct {
	frame // when p is a chain
	op    func(context.Context) (T, error)
	mu    sync.Mutex // guards out and set: hedged attempts may succeed together
	out   T
	set   bool
}

func (cf *callFrame[T]) Run(ctx context.Context) error {
	v, err := cf.op(ctx)
	if err == nil {
		cf.mu.Lock()
		if !cf.set {
			cf.out, cf.set = v, true
		}
		cf.mu.Unlock()
	}
	return err
}

func (cf *callFrame[T]) result() T {
	cf.mu.Lock()
	defer cf.mu.Unlock()
	return cf.out
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
