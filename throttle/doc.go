// Package throttle sheds a client's own requests when its backend is
// overloaded: client-side adaptive throttling, from chapter 21 of Google's
// Site Reliability Engineering book and Envoy's admission control filter.
//
//	th, err := throttle.New(throttle.Config{Name: "search"})
//	if err != nil { … }
//	err = bulwark.Compose(th, retryPolicy, breaker).Do(ctx, func(ctx context.Context) error { return search(ctx, q) })
//	if errors.Is(err, throttle.ErrThrottled) { … answer 503 without calling the backend … }
//
// A [Policy] counts the requests it makes and those the backend accepts over
// a sliding window, and refuses a new request locally with probability
// max(0, (requests − K × accepts) / (requests + 1)). It is meant for first
// attempts, outside the retry: retries and hedges are gated by retry's
// Budget already. A request whose caller gave up counts nowhere; a
// bulwark.Permanent error (a 4xx) counts as accepted, since the backend
// answered.
//
// A breaker stops calls to a dependency that fails outright; throttling
// sheds the excess of one that still serves part of the load, and no more.
//
// Conventions, as in every bulwark package: [New] never starts a goroutine
// (a Policy has no background work; its window slides as calls come), and
// its errors wrap [ErrInvalidConfig]. [Config].Classify takes the call's
// context and error, as every classification hook does. The Observer
// receives EventRejected, with Err [ErrThrottled], for each call refused.
package throttle
