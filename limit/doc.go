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
// [Permit]'s Done, which allocate nothing. A client-side balancer keeps one
// Limiter per endpoint through [Limiter.TryAcquire] and [Limiter.Release] (a
// *Limiter is a balancer.Limiter), whose refusal is silent and allocates
// nothing, since the call may still go to another endpoint. A refusal is a
// [*RejectedError] wrapping [ErrRejected]; it says why ([Reason]) and, where
// it can, when to try again (RetryAfter, which package retry honours).
//
// Conventions, as in every bulwark package: [New] and [NewBulkhead] never
// start a goroutine (neither has background work, so no Start or Close), and
// their errors wrap [ErrInvalidConfig]. Events go to the Config's Observer:
// EventRejected for each refusal (but for TryAcquire's), EventLimitChanged
// when a Limiter's limit moves, and EventMisuse for a Permit ended twice.
//
// # The adaptive limit
//
// A Limiter measures the median latency of a sample of its calls over short
// windows (at least twice the baseline and 1 ms, with at least 32 samples,
// fewer below a limit of 8) and compares it with its baseline, the median
// latency without queueing. From the two it estimates, as TCP Vegas and
// Netflix's Vegas limit do, how many calls wait in the callee's queue:
// q = limit × (1 − baseline ÷ median). While q is under a sixth of the
// limit and the limit is three-quarters used, the limit grows: by doubling
// steps back to where it stood before its last decreases (TCP's slow
// start), then by a twentieth a window. When q exceeds a quarter of the
// limit, or a tenth of the calls time out, the limit falls to bring q back
// between the two, by half at most. Bounds relative to the limit mean the
// same latency to every limiter: ten clients that share a server keep one
// short queue together, not ten.
//
// The baseline is the weak point of every latency-based limiter, and the
// algorithm is chosen around it:
//
//   - Netflix's Gradient2 and failsafe-go's adaptive limiter compare with a
//     moving average of past latencies. During a long overload the average
//     absorbs the queueing delay, the gradient returns to one and the limit
//     creeps up: the baseline drift their users tune against.
//   - Envoy's gradient controller re-measures its minimum latency every
//     minute or so by dropping to a few calls in flight, which costs
//     throughput each time and leaves the limit wrong in between.
//
// A Limiter's baseline only falls on its own (to any lower median it sees).
// It rises only through a probe: the limit is halved for one window, so
// that the callee's queue drains, and the median of the calls admitted
// during the probe is the latency without queueing. If it fell with the
// concurrency, the queueing was ours and the baseline stays; if it did not
// fall (the callee got slower, not busier: a dependency ten times slower),
// it becomes the baseline and the limit goes back to where it was before
// the decreases that led to the probe, instead of collapsing. A probe runs
// every ProbeInterval (10 s) while at least half the limit is in use, and
// soon after two decreases in a row. Probes start on a grid of the clock's wall time, the
// same on every instance, so that client-side limiters sharing a server
// drain its queue together and all see its true baseline.
//
// Failures that are not timeouts are not measured, so that fast failures
// neither lower the baseline nor make the limit collapse; calls canceled
// by their callers teach nothing; timeouts count at their full latency and
// as drops. The clock is read for one call in every n, with n chosen each
// window to keep 64 to 128 samples, so that admitting a call costs less
// than reading the time.
//
// The simulation in the repository's benchmarks module (cmd/limitsim)
// compares this with failsafe-go's limiter, Gradient2 and the best fixed
// limit in hindsight over eleven scenarios; BENCHMARKS.md has the figures.
//
// # Criticality and tenants
//
// Calls carry a [Criticality] in their context ([WithCriticality]; the
// middleware sets it from rules ([Rule]) or a trusted header). A Limiter
// keeps Headroom (a tenth by default, rounded down) of its limit free of
// Normal calls and twice that free of Sheddable ones, so that under overload
// the sheddable calls are refused first and the critical ones still find
// room; the limit grows to keep the callee busy all the same. A Bulkhead's
// queue serves the most critical waiter first and, when full, evicts a less
// critical one. With [WithTenant], no tenant holds more than TenantShare of
// the limit: its excess is refused with [ReasonTenant], which the middleware
// answers with 429 (the tenant should slow down) rather than 503 (the
// service is overloaded).
package limit
