// Package fallback serves a value when a call fails: a cached copy, a
// default, a degraded answer, typed as the call's own result.
//
//	price, err := fallback.New(fallback.Config[Price]{Func: func(ctx context.Context, err error) (Price, error) { return cache.Price(id) }})
//	if err != nil { … }
//	p, err := price.Call(ctx, bulwark.Compose(retryPolicy, breaker), func(ctx context.Context) (Price, error) {
//		return pricing.Get(ctx, id)
//	})
//
// The fallback runs for the errors that [Config.When] selects — by default
// the callee's failures ([DefaultWhen]): not a call canceled by its own
// caller, not a bulwark.Permanent refusal of the request — and gets the
// error, so it can tell an open breaker from a timeout. It never runs for a
// panic, which goes up as it is.
//
// [Fallback.Call] takes the guard rather than being one of its layers: a
// bulwark.Policy returns only an error, and the fallback must be the
// outermost layer anyway, outside every retry.
//
// [New]'s error wraps [ErrInvalidConfig]. A Fallback has no clock and no
// background work; the Observer of the [Config] receives an EventCall each
// time Func runs.
package fallback
