package redisrate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/ratelimit"
	"github.com/redis/go-redis/v9"
)

var (
	_ ratelimit.Taker = (*Limiter)(nil)
	_ ratelimit.Quota = (*Limiter)(nil)
)

// DefaultPrefix is the key prefix used when Config.Prefix is empty.
const DefaultPrefix = "bulwark:ratelimit:"

var (
	// ErrUnavailable is wrapped by the error of a decision that could not
	// be made because Redis did not answer, when the Limiter fails closed.
	ErrUnavailable = errors.New("redisrate: limiter unavailable")

	// ErrInvalidConfig is wrapped by the error of New for a Config it
	// cannot use.
	ErrInvalidConfig = errors.New("redisrate: invalid config")
)

// Config configures a Limiter. Client and Rate are required.
type Config struct {
	// Client is the Redis client: a *redis.Client, a *redis.ClusterClient
	// (each key's bucket is one Redis key) or any other
	// redis.UniversalClient. A *redis.Client, *redis.ClusterClient or
	// *redis.Ring must be created with ContextTimeoutEnabled, so that
	// Timeout bounds each call, or New refuses it. Required.
	Client redis.UniversalClient

	// Prefix starts the name of every Redis key the Limiter writes: the
	// bucket of key k is Prefix + k. Limiters that share a Prefix, a Rate,
	// a Period and a Burst share their limits, in any number of processes.
	// If empty, DefaultPrefix.
	Prefix string

	// Name names the limiter in events and errors. Optional.
	Name string

	// Rate, Period and Burst are the limit of each key, as in
	// ratelimit.Config: Rate per Period in the long run (Rate is
	// required), bursts of up to Burst (if zero, Rate); Period defaults to
	// 1 s. Time is kept in microseconds: Period / Rate must be at least
	// 1 µs, and is rounded up to a microsecond.
	Rate   int
	Period time.Duration
	Burst  int

	// Timeout bounds each round trip to Redis, within the caller's own
	// deadline. If zero, 100 ms.
	Timeout time.Duration

	// FailOpen chooses what happens when Redis does not answer in time:
	// if true, the request is allowed (the limit is off during the
	// outage); if false, Take returns an error wrapping ErrUnavailable and
	// Do refuses the call (the limit holds, and so does the outage for the
	// callers). Ignored when Fallback is set.
	FailOpen bool

	// Fallback, if set, decides when Redis does not answer: typically a
	// ratelimit.Group with the fleet's limit divided by the number of
	// instances, so that each instance keeps its share during an outage.
	Fallback ratelimit.Taker

	// Observer receives EventRejected for each refusal (Key, Delay the
	// RetryAfter, Reason "rate" or "burst") and EventStoreError for each
	// decision Redis could not make (Err, Latency; Reason "fail-open",
	// "fail-closed" or "fallback"), with Component
	// bulwark.ComponentRateLimit. If nil, no events and no cost.
	Observer bulwark.Observer
}

// Limiter is a rate limiter shared by every instance of a service: the
// bucket of each key is kept in Redis and decided by the generic cell rate
// algorithm (as in package ratelimit) in one Lua script, so each decision is
// one round trip (two the first time a server lacks the script) and is
// atomic whatever the number of clients. The script reads the server's
// clock (TIME), never the clients', so clients whose clocks disagree still
// share one limit exactly.
//
// A Limiter is safe for concurrent use by multiple goroutines. Use New; the
// zero Limiter is not usable.
type Limiter struct {
	client   redis.UniversalClient
	prefix   string
	name     string
	interval int64 // µs
	tau      int64 // µs
	burst    int
	quota    time.Duration
	timeout  time.Duration
	failOpen bool
	fallback ratelimit.Taker
	obs      bulwark.Observer
}

// New returns a Limiter for cfg. It does no I/O. It returns an error wrapping
// ErrInvalidConfig if Client is nil or does not honour context deadlines, if
// Rate is not positive, if Period, Burst or Timeout is negative, or if the
// rate is above one per microsecond.
func New(cfg Config) (*Limiter, error) {
	switch {
	case cfg.Client == nil:
		return nil, fmt.Errorf("%w: Client is nil", ErrInvalidConfig)
	case !honoursContext(cfg.Client):
		return nil, fmt.Errorf("%w: Client does not honour context deadlines; create it with ContextTimeoutEnabled: true", ErrInvalidConfig)
	case cfg.Rate <= 0:
		return nil, fmt.Errorf("%w: Rate %d, want > 0", ErrInvalidConfig, cfg.Rate)
	case cfg.Period < 0:
		return nil, fmt.Errorf("%w: Period %v is negative", ErrInvalidConfig, cfg.Period)
	case cfg.Burst < 0:
		return nil, fmt.Errorf("%w: Burst %d is negative", ErrInvalidConfig, cfg.Burst)
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("%w: Timeout %v is negative", ErrInvalidConfig, cfg.Timeout)
	}
	l := &Limiter{
		client:   cfg.Client,
		prefix:   cfg.Prefix,
		name:     cfg.Name,
		burst:    cfg.Burst,
		timeout:  cfg.Timeout,
		failOpen: cfg.FailOpen,
		fallback: cfg.Fallback,
		obs:      cfg.Observer,
	}
	if l.prefix == "" {
		l.prefix = DefaultPrefix
	}
	period := cfg.Period
	if period == 0 {
		period = time.Second
	}
	if l.burst == 0 {
		l.burst = cfg.Rate
	}
	if l.timeout == 0 {
		l.timeout = 100 * time.Millisecond
	}
	periodUS := period.Microseconds()
	if periodUS < int64(cfg.Rate) {
		return nil, fmt.Errorf("%w: Rate %d per Period %v is above one per microsecond", ErrInvalidConfig, cfg.Rate, period)
	}
	l.interval = (periodUS + int64(cfg.Rate) - 1) / int64(cfg.Rate)
	// Lua keeps numbers as doubles: TAT, in µs since 1970, plus tau must
	// stay exact (below 2^53 µs, year 2255).
	if int64(l.burst) > int64(100*365*24*time.Hour/time.Microsecond)/l.interval {
		return nil, fmt.Errorf("%w: Burst %d takes more than 100 years to refill at %d per %v", ErrInvalidConfig, l.burst, cfg.Rate, period)
	}
	l.tau = int64(l.burst) * l.interval
	l.quota = time.Duration(math.Round(float64(l.burst) * float64(period) / float64(cfg.Rate)))
	return l, nil
}

// honoursContext reports whether c is known to bound its network I/O by the
// context deadline. Clients of other types are trusted.
func honoursContext(c redis.UniversalClient) bool {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return true
}

// gcra is the decision, in microseconds of the server's clock. KEYS[1] is
// the bucket, a string holding its TAT; ARGV are the interval, Burst ×
// interval and n. It returns {allowed, remaining, retry after, reset}. The
// key expires when the bucket is full again, when it would read the same as
// no key. Redis 5 and later replicate a script by its effects, so reading
// TIME before a write is allowed.
var gcra = redis.NewScript(`
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then
  tat = now
end
local nt = tat + n * interval
local wait = nt - tau - now
if wait > 0 then
  return {0, math.floor((tau - (tat - now)) / interval), wait, tat - now}
end
if n > 0 then
  redis.call('SET', KEYS[1], string.format('%d', nt), 'PX', math.ceil((nt - now) / 1000))
end
return {1, math.floor((tau - (nt - now)) / interval), 0, nt - now}
`)

// Take takes n tokens of key's bucket if they are all there, in one round
// trip, and returns the decision, as ratelimit.Group.Take does. A request
// for more than Burst tokens is refused without a round trip (RetryAfter is
// the longest Duration); n ≤ 0 is allowed and takes nothing.
//
// When Redis does not answer within Timeout (or ctx's deadline, if
// earlier), Take asks Fallback if there is one; otherwise, failing open, it
// allows the request, and failing closed it returns an error wrapping
// ErrUnavailable and the client's error. It returns ctx.Err() if ctx is
// already done.
func (l *Limiter) Take(ctx context.Context, key string, n int) (ratelimit.Result, error) {
	if err := ctx.Err(); err != nil {
		return ratelimit.Result{}, err
	}
	if n > l.burst {
		if l.obs != nil {
			l.reject(ctx, key, time.Duration(math.MaxInt64), "burst")
		}
		return ratelimit.Result{Limit: l.burst, RetryAfter: time.Duration(math.MaxInt64)}, nil
	}
	n = max(n, 0)
	start := time.Now()
	tctx, cancel := context.WithTimeout(ctx, l.timeout)
	vals, err := gcra.Run(tctx, l.client, []string{l.prefix + key}, l.interval, l.tau, n).Int64Slice()
	cancel()
	if err == nil && len(vals) != 4 {
		err = fmt.Errorf("redisrate: script returned %d values, want 4", len(vals))
	}
	if err != nil {
		return l.outage(ctx, key, n, err, time.Since(start))
	}
	r := ratelimit.Result{
		Allowed:    vals[0] == 1,
		Limit:      l.burst,
		Remaining:  int(max(vals[1], 0)),
		RetryAfter: time.Duration(vals[2]) * time.Microsecond,
		Reset:      time.Duration(max(vals[3], 0)) * time.Microsecond,
	}
	if !r.Allowed && l.obs != nil {
		l.reject(ctx, key, r.RetryAfter, "rate")
	}
	return r, nil
}

// outage decides for a request that Redis could not.
func (l *Limiter) outage(ctx context.Context, key string, n int, err error, latency time.Duration) (ratelimit.Result, error) {
	if ctx.Err() != nil {
		return ratelimit.Result{}, ctx.Err() // the caller gave up: not an outage
	}
	reason := "fail-closed"
	switch {
	case l.fallback != nil:
		reason = "fallback"
	case l.failOpen:
		reason = "fail-open"
	}
	if l.obs != nil {
		observeContext(ctx, l.obs, bulwark.Event{
			Kind: bulwark.EventStoreError, Component: bulwark.ComponentRateLimit, Name: l.name, Key: key,
			Err: err, Latency: latency, Reason: reason,
		})
	}
	switch {
	case l.fallback != nil:
		return l.fallback.Take(ctx, key, n)
	case l.failOpen:
		return ratelimit.Result{Allowed: true, Limit: l.burst}, nil
	}
	return ratelimit.Result{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
}

func (l *Limiter) reject(ctx context.Context, key string, wait time.Duration, reason string) {
	observeContext(ctx, l.obs, bulwark.Event{
		Kind: bulwark.EventRejected, Component: bulwark.ComponentRateLimit, Name: l.name, Key: key, Delay: wait,
		Err: &ratelimit.LimitError{Name: l.name, Key: key, Wait: wait, Reason: reason}, Reason: reason,
	})
}

// Do runs op if a token of key is available; otherwise it returns a
// *ratelimit.LimitError (wrapping ratelimit.ErrLimited, with RetryAfter)
// without running op. When Redis does not answer and the Limiter fails
// closed, it returns the error of Take without running op.
func (l *Limiter) Do(ctx context.Context, key string, op func(context.Context) error) error {
	r, err := l.Take(ctx, key, 1)
	if err != nil {
		return err
	}
	if !r.Allowed {
		reason := "rate"
		if r.RetryAfter == time.Duration(math.MaxInt64) {
			reason = "burst"
		}
		return &ratelimit.LimitError{Name: l.name, Key: key, Wait: r.RetryAfter, Reason: reason}
	}
	return op(ctx)
}

// Policy returns a bulwark.Policy that runs each call through Do, with the
// key that key returns for the call's context. A nil key means the key ""
// for every call.
func (l *Limiter) Policy(key func(context.Context) string) bulwark.Policy {
	return bulwark.PolicyFunc(func(ctx context.Context, op func(context.Context) error) error {
		k := ""
		if key != nil {
			k = key(ctx)
		}
		return l.Do(ctx, k, op)
	})
}

// Quota returns Burst and the time it takes to refill Burst tokens at Rate
// per Period, for the RateLimit-Policy header of ratelimit.Middleware.
func (l *Limiter) Quota() (quota int, window time.Duration) { return l.burst, l.quota }
