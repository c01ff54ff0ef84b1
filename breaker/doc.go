// Package breaker provides circuit breakers: guards that stop calling a
// dependency that keeps failing, and let it recover.
//
// A [Breaker] is closed while calls go well. Its trip rules — consecutive
// failures, a failure rate or a slow-call rate over a count or a time
// window, after a minimum number of calls — open it; open, it refuses calls
// at once with an [*OpenError] (wrapping [ErrOpen], with the time until the
// next probe); after the open duration, which can grow on repeated trips, it
// turns half-open and lets a bounded number of probes through, with a
// deadline. Enough successful probes close it; a failed one opens it again.
//
//	cb, err := breaker.New(breaker.Config{Name: "payments", FailureRate: 0.5, WindowCalls: 100})
//	if err != nil { … }
//	err = cb.Do(ctx, func(ctx context.Context) error { return charge(ctx, order) })
//	if errors.Is(err, breaker.ErrOpen) { … serve a fallback … }
//
// A Breaker is a [bulwark.Policy], so it composes with retries:
// bulwark.Compose(retryPolicy, cb); a retry policy fails the call at once on
// its refusal, which has a CircuitOpen method to say so, rather than wait for
// it. Callers that cannot wrap the call in a function use [Breaker.Allow] and
// [Permit.Done] (a second Done is ignored and reported as misuse), or the
// lower-level [Breaker.Acquire] and [Breaker.Release] that balancers use.
// [Call] guards a call that returns a value and classifies the value too (an
// HTTP 503 is a failure though its error is nil). A [Group] keeps one breaker
// per key, such as a host or a tenant; [Group.SetEndpoints] makes it follow a
// fleet's membership. [Transport] guards HTTP requests with the breaker of
// their host.
//
// Outcomes are classified as success, failure or neutral (see
// [bulwark.Outcome]); neutral ones, such as a call canceled by its own
// caller, count nowhere. The closed state's hot path takes no lock and does
// not read the clock (unless a slow-call rule or an Observer needs the
// latency); a time window is moved by a timer while calls come.
package breaker
