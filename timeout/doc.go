// Package timeout bounds the time a call may take, as a [bulwark.Policy]
// that composes with the other guards.
//
//	tp, err := timeout.New(timeout.Config{Name: "inventory", Timeout: 800 * time.Millisecond})
//	if err != nil { … }
//	err = tp.Do(ctx, func(ctx context.Context) error { return inventory.Reserve(ctx, item) })
//	if errors.Is(err, timeout.ErrTimeout) { … }
//
// Placed outside a retry, bulwark.Compose(tp, retryPolicy, breaker) bounds
// the whole call, backoff included; inside, bulwark.Compose(retryPolicy,
// tp, breaker) bounds each attempt and the retry tries again. Either way a
// call that overran fails with an [*Error] that matches both [ErrTimeout]
// and context.DeadlineExceeded, so retries and breakers count it as a
// failure of the callee (bulwark.Classify), never as the caller giving up,
// and the op's own context reports context.DeadlineExceeded too, on an
// injected clock as on the wall clock.
//
// Do waits for the op to return: see [Policy.Do] for why, and what that
// means for an op that ignores its context.
//
// Conventions, as in every bulwark package: [New] never starts a goroutine,
// and its error wraps [ErrInvalidConfig]. The Observer of the [Config]
// receives an EventCall for each call, with Reason "timeout" for one that
// overran.
package timeout
