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
// windows (at least twice the baseline and 1 ms, with 56 samples, fewer
// below a limit of 14) and compares it with its baseline, the median
// latency without queueing. From the two it estimates, as TCP Vegas and
// Netflix's Vegas limit do, the share of the latency spent queueing,
// q = 1 − baseline ÷ median: q × limit calls wait in the callee. After each
// window the limit moves toward the queue share m that it aims at, as a
// gradient with a fixed reference: it is multiplied by
// ((1 − q) ÷ (1 − m))^k, where k grows with the error from 0.05 to 0.5, so
// that the noise of one window barely moves the limit and a step moves it
// at once (by half at most). The limit grows only while three-quarters of
// it is in use, and then by at least one call a window when nothing
// queues.
//
// The target m depends on the share of the calls refused: a tenth while
// most are refused, where every queued call adds latency and no
// throughput, up to three tenths as the refusals vanish, where a few queued
// calls keep the callee busy between bursts of arrivals. Targets relative
// to the limit mean the same latency to every limiter: ten clients that
// share a server keep one short queue together, not ten.
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
// A Limiter's baseline falls on its own to a lower median that holds for
// three windows in a row: one lucky window does not move it. It rises only
// on evidence that the latency is not queueing:
//
//   - A probe. Every ProbeInterval (10 s), while at least half the limit is
//     in use, the limit is halved for one short window (24 samples), so
//     that the callee's queue drains; the calls admitted before it drained
//     are not measured. If their median did not fall with the concurrency,
//     and the latency had held over the windows before, it is the latency
//     without queueing and becomes the baseline. If it fell, the queueing
//     was ours: the baseline stays, refreshed by the median when that is
//     lower, or at most a fifth higher; and if the calls queued even at
//     half the limit, the limit comes back lower than it was.
//   - The decreases themselves: when a run of decreases has taken the limit
//     to a quarter of where it started and the latency did not fall, the
//     latency becomes the baseline.
//
// When the baseline rises by half or more (the callee got slower, not
// busier: a dependency ten times slower), the limit climbs back by doubling
// steps toward where it stood before the decreases, instead of collapsing.
// The next windows check a rise: if the calls queue at once at the same
// limit, the capacity fell while it was measured, and the old baseline
// comes back. Probes start on a grid of the clock's wall time, the same on
// every instance, with the first sampled call after their moment rather
// than at the end of a window, so that client-side limiters sharing a
// server halve their limits together, drain its queue, and all see its
// true baseline.
//
// A window where a quarter of the calls time out lowers the limit by a
// tenth (more if the latency says so, half at most); after a black hole
// (half of them), the limit climbs back by doubling steps to where it stood
// before, as soon as calls succeed again. Failures that are not timeouts
// are not measured, so that fast failures neither lower the baseline nor
// make the limit collapse; calls canceled by their callers teach nothing;
// timeouts count at their full latency. The clock is read for one call in
// every n, with n chosen each window to keep 64 to 128 samples at high
// rates, so that admitting a call costs less than reading the time.
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
