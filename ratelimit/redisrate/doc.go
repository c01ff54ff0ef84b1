// Package redisrate is a rate limiter shared by every instance of a
// service, kept in Redis: the limit of a tenant or an API key holds across
// the fleet, however many instances serve it.
//
//	lim, err := redisrate.New(redisrate.Config{Client: rdb, Prefix: "api:rl:", Rate: 100, Burst: 20})
//	if err != nil { … }
//	mw, err := ratelimit.Middleware(ratelimit.HTTPConfig{Limiter: lim, Key: apiKey, Headers: true})
//	if err != nil { … }
//	http.ListenAndServe(addr, mw(api))
//
// [New] returns a [Limiter]; each decision ([Limiter.Take], [Limiter.Do],
// or a layer of bulwark.Compose through [Limiter.Policy]) is one Lua script,
// one round trip, atomic on the server:
// the generic cell rate algorithm of package ratelimit, on the server's
// clock (TIME), so the clocks of the clients do not matter, and N clients
// together never pass more than Burst + Rate × elapsed / Period.
//
// When Redis does not answer within [Config].Timeout, the Limiter fails open
// (the request passes), closed (the request is refused with an error
// wrapping [ErrUnavailable]; the middleware answers 503), or decides with a
// local Config.Fallback such as a [ratelimit.Group] holding each instance's
// share of the limit. Every such decision is reported as EventStoreError,
// and every refusal as EventRejected.
//
// New does no I/O and starts no goroutine, and its errors wrap
// [ErrInvalidConfig]; the Limiter has no background work (a bucket's Redis
// key expires once the bucket is full again).
package redisrate
