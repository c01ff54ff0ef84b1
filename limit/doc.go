// Package limit protects a service, or a caller, from more concurrent work
// than it can do: a fixed [Bulkhead], an adaptive concurrency [Limiter] that
// finds the capacity by itself, and shedding by [Criticality] and tenant,
// with [Middleware] for HTTP servers.
//
//	lim, err := limit.New(limit.Config{Name: "api"}) // no tuning needed
//	if err != nil { … }
//	mw, err := limit.Middleware(limit.MiddlewareConfig{Limiter: lim, Rules: rules})
//	http.ListenAndServe(addr, mw(handler))
//	err = lim.Do(ctx, func(ctx context.Context) error { return call(ctx) }) // anything else
//
// Both are [bulwark.Policy] values. Callers that cannot wrap the call in a
// function use [Limiter.Acquire] or [Bulkhead.Acquire] and the returned
// [Permit]'s Done, which allocate nothing; a client-side balancer keeps one
// Limiter per endpoint through [Limiter.TryAcquire] and [Limiter.Release] (a
// *Limiter is a balancer.Limiter). A refusal is a [*RejectedError] wrapping [ErrRejected]; it says why
// ([Reason]) and, where it can, when to try again (RetryAfter, which package
// retry honours).
//
// A Limiter compares the median latency of its calls with its baseline, the
// latency without queueing, and moves its limit to keep a short queue in its
// callee; timeouts lower it. The [Limiter] type documents the algorithm and
// how its baseline avoids the drift of other latency-based limiters.
//
// Calls carry a [Criticality] and a tenant in their context
// ([WithCriticality], [WithTenant]): under overload the least critical calls
// are shed first ([Config].Headroom), and no tenant holds more than its share
// of a limit ([Config].TenantShare).
//
// Conventions, as in every bulwark package: [New] and [NewBulkhead] never
// start a goroutine (neither has background work, so no Start or Close), and
// their errors wrap [ErrInvalidConfig]. Events go to the Config's Observer:
// [Config].Observer and [BulkheadConfig].Observer list them.
package limit
