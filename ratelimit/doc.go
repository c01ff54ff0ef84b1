// Package ratelimit provides rate limiters: a [Limiter] for one limit, a
// [Group] for one limit per key (tenant, route, client), and HTTP
// [Middleware] that answers 429 with Retry-After.
//
// Both decide with the generic cell rate algorithm (GCRA), which is a token
// bucket of Burst tokens refilled at Rate per Period, kept as a single
// timestamp: a decision is one clock read and one compare-and-swap, with no
// lock and no allocation.
//
//	lim, err := ratelimit.NewGroup(ratelimit.GroupConfig{Limit: ratelimit.Config{Rate: 100, Burst: 20}})
//	if err != nil { … }
//	if !lim.Allow(tenant) {
//		return errTooManyRequests
//	}
//
// A Limiter is a [bulwark.Policy]: [Limiter.Do] runs the call or refuses it
// with a [*LimitError], which wraps [ErrLimited] and carries RetryAfter, so
// that bulwark.Compose(retryPolicy, limiter) waits for the next token instead
// of spinning. [Limiter.Wait] and WaitN block until tokens are available but
// never past the context's deadline: a wait that cannot end in time returns
// at once. Allow has explicit-time twins ([Limiter.AllowAt],
// [Limiter.AllowN]), as in golang.org/x/time/rate.
//
// A Group evicts keys whose buckets have been full for a while, which loses
// nothing, and bounds the keys it holds. [Group.Policy] makes it a layer of
// bulwark.Compose too, keyed by the call's context (a tenant, a route). For a
// limit shared by every instance of a service, see package
// ratelimit/redisrate, whose limiter plugs into the same Middleware through
// the [Taker] interface.
//
// Conventions, as in every bulwark package: [New] and [NewGroup] never start
// a goroutine (there is no background work: a Group evicts as keys are
// added), and configuration errors wrap [ErrInvalidConfig]. The Observer of
// the [Config] receives EventRejected for each refusal.
package ratelimit
