package redisstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/redis/go-redis/v9"
)

var _ idempotency.Store = (*Store)(nil)

// ErrInvalidConfig is wrapped by every error New returns for a bad Config.
// Callers test with errors.Is.
var ErrInvalidConfig = errors.New("redisstore: invalid config")

// DefaultPrefix is the key prefix used when Config.Prefix is empty.
const DefaultPrefix = "bulwark:idempotency:"

// Config configures a Store. The zero value is not usable: Client is required.
type Config struct {
	// Client is the Redis client: a *redis.Client, a *redis.ClusterClient or
	// any other redis.UniversalClient (single node and Cluster are tested).
	// It must honour context deadlines: a *redis.Client, *redis.ClusterClient
	// or *redis.Ring must be created with ContextTimeoutEnabled set, or New
	// refuses it. Required.
	Client redis.UniversalClient

	// Prefix starts the name of every Redis key the Store writes. The key of
	// an idempotency key k is Prefix + "{" + k + "}": the braces are a Redis
	// Cluster hash tag, so everything kept for k stays in one slot, and the
	// prefix must not itself contain braces. If empty, DefaultPrefix.
	Prefix string

	// TestClock, if not nil, replaces the server's clock: the scripts decide
	// expiry against its time, sent with each call, instead of Redis TIME.
	// It is for tests that move time by hand; leave it nil in production,
	// where a client's clock must never decide a lease.
	TestClock bulwark.Clock

	// ExpiryGrace is how long Redis keeps a record past its expiry before
	// deleting it. Expiry is decided by the scripts; the Redis TTL only
	// collects garbage. If zero, one minute; negative is an error.
	ExpiryGrace time.Duration
}

// Store is an idempotency.Store kept in Redis. Each idempotency key k is one
// Redis hash named Prefix + "{" + k + "}"; the braces are a Cluster hash
// tag, so a key's data never spans slots. Claim, Extend, Complete, Release
// and Get each run one Lua script, so each is one round trip (plus one the
// first time a script is missing from a server's script cache): Claim sets
// the in-flight record or returns the live one, value included, so a replay
// is a single call; Extend, Complete and Release check the fencing token
// inside the script. Fencing tokens are random 64-bit numbers, so a token
// never comes back even after a key's record is deleted and claimed again.
//
// Leases and retention are decided by the server's clock: each script reads
// Redis TIME and compares and sets expiries against it, to the microsecond,
// with durations rounded up so that a lease never ends early. A client whose
// clock is skewed cannot shorten another's lease. Config.TestClock replaces
// the server's clock, for tests only. The Redis TTL of each record is its
// lease or retention plus Config.ExpiryGrace and only collects garbage: no
// reaper is needed, and a Store has no background work.
//
// A Store is safe for concurrent use by multiple goroutines, and any number
// of Stores in any number of processes may share one Redis deployment and
// Prefix.
type Store struct {
	client redis.UniversalClient
	prefix string
	clock  bulwark.Clock // Config.TestClock; nil in production
	grace  time.Duration
}

// New returns a Store for cfg. It does no I/O and starts no goroutine. It
// returns an error wrapping ErrInvalidConfig if cfg.Client is nil or known
// not to honour context deadlines, if cfg.Prefix contains a brace, or if
// cfg.ExpiryGrace is negative.
func New(cfg Config) (*Store, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("%w: Config.Client is nil", ErrInvalidConfig)
	}
	if !honoursContext(cfg.Client) {
		return nil, fmt.Errorf("%w: Config.Client does not honour context deadlines; create it with ContextTimeoutEnabled: true", ErrInvalidConfig)
	}
	for _, c := range cfg.Prefix {
		if c == '{' || c == '}' {
			return nil, fmt.Errorf("%w: Config.Prefix %q contains a brace, which would break the per-key hash tag", ErrInvalidConfig, cfg.Prefix)
		}
	}
	if cfg.ExpiryGrace < 0 {
		return nil, fmt.Errorf("%w: Config.ExpiryGrace is %v, want >= 0", ErrInvalidConfig, cfg.ExpiryGrace)
	}
	s := &Store{
		client: cfg.Client,
		prefix: cfg.Prefix,
		clock:  cfg.TestClock,
		grace:  cfg.ExpiryGrace,
	}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if s.grace == 0 {
		s.grace = time.Minute
	}
	return s, nil
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

// redisKey returns the name of the Redis key that holds the record of key.
func (s *Store) redisKey(key string) string {
	return s.prefix + "{" + key + "}"
}

// The record of a key is a hash with these fields:
//
//	f  fingerprint
//	t  fencing token, decimal
//	s  state: "0" in flight, "1" completed
//	o  "1" when the claim took over an expired lease
//	l  lease expiry, Unix microseconds by the server's clock
//	e  when a completed record is forgotten, Unix microseconds
//	v  the stored value
//	n  nonce of the Complete that completed it, so a retried Complete succeeds
//
// Times are compared as Lua numbers, exact for microseconds (below 2^53), and
// written with %.0f, which keeps every digit. Every script takes the time as
// its first argument: empty in production, where it reads the server's TIME,
// or the time of Config.TestClock.

// prelude starts every script: it lets a script that reads TIME write on
// servers older than Redis 5 (a no-op since), and sets now.
const prelude = `
if redis.replicate_commands then redis.replicate_commands() end
local now
if ARGV[1] ~= '' then
	now = tonumber(ARGV[1])
else
	local t = redis.call('TIME')
	now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function at(d) return string.format('%.0f', now + tonumber(d)) end
`

// claimScript: KEYS[1] record; ARGV now, fingerprint, token, lease in µs,
// TTL in ms. Returns {1, takenOver} when the caller won, or
// {0, f, t, s, v, l, e} with the live record.
var claimScript = newScript(prelude + `
local r = redis.call('HMGET', KEYS[1], 'f', 't', 's', 'v', 'l', 'e', 'o')
local over = '0'
if r[2] then
	if r[2] == ARGV[3] then
		return {1, r[7] or '0'}
	end
	local expiry = r[6]
	if r[3] ~= '1' then expiry = r[5] end
	if tonumber(expiry) > now then
		return {0, r[1] or '', r[2], r[3] or '0', r[4] or '', r[5] or '0', r[6] or '0'}
	end
	if r[3] ~= '1' then over = '1' end
	redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'f', ARGV[2], 't', ARGV[3], 's', '0', 'o', over, 'l', at(ARGV[4]))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, over}
`)

// extendScript: KEYS[1] record; ARGV now, token, lease in µs, TTL in ms.
// Returns 1 when extended, 0 when fenced.
var extendScript = newScript(prelude + `
local r = redis.call('HMGET', KEYS[1], 't', 's', 'l')
if r[1] ~= ARGV[2] or r[2] ~= '0' or tonumber(r[3]) <= now then return 0 end
redis.call('HSET', KEYS[1], 'l', at(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`)

// completeScript: KEYS[1] record; ARGV now, token, value, retention in µs,
// TTL in ms, nonce. Returns 1 when stored, 0 when fenced.
var completeScript = newScript(prelude + `
local r = redis.call('HMGET', KEYS[1], 't', 's', 'n', 'l')
if r[1] ~= ARGV[2] then return 0 end
if r[2] == '1' then
	if r[3] == ARGV[6] then return 1 end
	return 0
end
if tonumber(r[4]) <= now then return 0 end
redis.call('HSET', KEYS[1], 's', '1', 'v', ARGV[3], 'e', at(ARGV[4]), 'n', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`)

// releaseScript: KEYS[1] record; ARGV now, token. Returns 1 when released,
// 0 when fenced.
var releaseScript = newScript(prelude + `
local r = redis.call('HMGET', KEYS[1], 't', 's', 'l')
if r[1] ~= ARGV[2] or r[2] ~= '0' or tonumber(r[3]) <= now then return 0 end
redis.call('DEL', KEYS[1])
return 1
`)

// getScript: KEYS[1] record; ARGV now. Returns {f, t, s, v, l, e} of the
// live record, or an empty array.
var getScript = newScript(prelude + `
local r = redis.call('HMGET', KEYS[1], 'f', 't', 's', 'v', 'l', 'e')
if not r[2] then return {} end
local expiry = r[6]
if r[3] ~= '1' then expiry = r[5] end
if tonumber(expiry or '0') <= now then return {} end
return {r[1] or '', r[2], r[3] or '0', r[4] or '', r[5] or '0', r[6] or '0'}
`)

// Claim implements idempotency.Store.Claim in one round trip: a Lua script
// that claims key or returns its live record, value included, so that a
// replay needs no second call. The lease runs from the server's TIME. It
// returns an error if lease is not positive or longer than 2^52 µs (about
// 142 years), and otherwise only errors of the client, such as an
// unreachable server or the end of ctx, wrapped with the operation and key.
func (s *Store) Claim(ctx context.Context, key string, fingerprint []byte, lease time.Duration) (idempotency.Claim, error) {
	if err := ctx.Err(); err != nil {
		return idempotency.Claim{}, fmt.Errorf("redisstore: claim %q: %w", key, err)
	}
	us, ttl, err := s.duration("lease", lease)
	if err != nil {
		return idempotency.Claim{}, fmt.Errorf("redisstore: claim %q: %w", key, err)
	}
	token := newToken()
	tok := strconv.FormatUint(token, 10)
	res, err := s.run(ctx, claimScript, key, s.now(), fingerprint, tok, us, ttl)
	if err != nil {
		return idempotency.Claim{}, fmt.Errorf("redisstore: claim %q: %w", key, err)
	}
	c, err := parseClaim(key, token, res)
	if err != nil {
		return idempotency.Claim{}, fmt.Errorf("redisstore: claim %q: %w", key, err)
	}
	return c, nil
}

// Extend implements idempotency.Store.Extend in one round trip: the lease
// then ends lease after the server's TIME. It returns an error wrapping
// idempotency.ErrFenced when token is not the live in-flight claim's (its
// lease passed, it was taken over, released or completed), an error if lease
// is out of range as for Claim, and otherwise only errors of the client.
func (s *Store) Extend(ctx context.Context, key string, token uint64, lease time.Duration) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redisstore: extend %q: %w", key, err)
	}
	us, ttl, err := s.duration("lease", lease)
	if err != nil {
		return fmt.Errorf("redisstore: extend %q: %w", key, err)
	}
	res, err := s.run(ctx, extendScript, key, s.now(), strconv.FormatUint(token, 10), us, ttl)
	if err != nil {
		return fmt.Errorf("redisstore: extend %q: %w", key, err)
	}
	if n, _ := res.(int64); n != 1 {
		return fmt.Errorf("redisstore: extend %q with token %d: %w", key, token, idempotency.ErrFenced)
	}
	return nil
}

// Complete implements idempotency.Store.Complete in one round trip. It
// returns an error wrapping idempotency.ErrFenced when token is not the live
// in-flight claim's (its lease passed, it was taken over, released or
// completed), an error if retention is not positive or out of range as a
// lease is for Claim, and otherwise only errors of the client. A Complete
// that the client retried after a lost reply is recognised and succeeds.
func (s *Store) Complete(ctx context.Context, key string, token uint64, value []byte, retention time.Duration) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redisstore: complete %q: %w", key, err)
	}
	us, ttl, err := s.duration("retention", retention)
	if err != nil {
		return fmt.Errorf("redisstore: complete %q: %w", key, err)
	}
	nonce := strconv.FormatUint(newToken(), 10)
	res, err := s.run(ctx, completeScript, key, s.now(), strconv.FormatUint(token, 10), value, us, ttl, nonce)
	if err != nil {
		return fmt.Errorf("redisstore: complete %q: %w", key, err)
	}
	if n, _ := res.(int64); n != 1 {
		return fmt.Errorf("redisstore: complete %q with token %d: %w", key, token, idempotency.ErrFenced)
	}
	return nil
}

// Release implements idempotency.Store.Release in one round trip. It returns
// an error wrapping idempotency.ErrFenced when token is not the live
// in-flight claim's (including when the record is gone or its lease has
// passed), and otherwise only errors of the client.
func (s *Store) Release(ctx context.Context, key string, token uint64) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redisstore: release %q: %w", key, err)
	}
	res, err := s.run(ctx, releaseScript, key, s.now(), strconv.FormatUint(token, 10))
	if err != nil {
		return fmt.Errorf("redisstore: release %q: %w", key, err)
	}
	if n, _ := res.(int64); n != 1 {
		return fmt.Errorf("redisstore: release %q with token %d: %w", key, token, idempotency.ErrFenced)
	}
	return nil
}

// Get implements idempotency.Store.Get in one round trip, a script that
// returns the record if it is live by the server's TIME. It returns an error
// wrapping idempotency.ErrNotFound when key has no record, or its lease or
// retention has passed, and otherwise only errors of the client.
func (s *Store) Get(ctx context.Context, key string) (idempotency.Record, error) {
	if err := ctx.Err(); err != nil {
		return idempotency.Record{}, fmt.Errorf("redisstore: get %q: %w", key, err)
	}
	res, err := s.run(ctx, getScript, key, s.now())
	if err != nil {
		return idempotency.Record{}, fmt.Errorf("redisstore: get %q: %w", key, err)
	}
	a, ok := res.([]any)
	if !ok || (len(a) != 0 && len(a) != 6) {
		return idempotency.Record{}, fmt.Errorf("redisstore: get %q: unexpected script reply %v", key, res)
	}
	if len(a) == 0 {
		return idempotency.Record{}, fmt.Errorf("redisstore: get %q: %w", key, idempotency.ErrNotFound)
	}
	var f [6]string
	for i := range f {
		f[i], _ = a[i].(string)
	}
	rec, err := makeRecord(key, f[0], f[1], f[2], f[3], f[4], f[5])
	if err != nil {
		return idempotency.Record{}, fmt.Errorf("redisstore: get %q: %w", key, err)
	}
	return rec, nil
}

// maxMicros bounds a lease or retention, so that the server's time plus it
// stays exact in a Lua number (below 2^53) for a century to come.
const maxMicros = 1 << 52

// duration returns d in microseconds, rounded up so that a lease never ends
// early, and the garbage-collection TTL in milliseconds, d plus the grace.
func (s *Store) duration(what string, d time.Duration) (string, string, error) {
	if d <= 0 {
		return "", "", fmt.Errorf("%s is %v, want > 0", what, d)
	}
	us := (d + time.Microsecond - 1) / time.Microsecond
	if d > math.MaxInt64-time.Microsecond || us >= maxMicros {
		return "", "", fmt.Errorf("%s %v is out of range", what, d)
	}
	ttl := d + s.grace
	if ttl < d { // overflow
		ttl = math.MaxInt64
	}
	ms := ttl / time.Millisecond
	if ms*time.Millisecond < ttl {
		ms++
	}
	return strconv.FormatInt(int64(us), 10), strconv.FormatInt(int64(ms), 10), nil
}

// now returns the time argument of the scripts: empty, so that they read the
// server's TIME, or the TestClock's time in Unix microseconds.
func (s *Store) now() string {
	if s.clock == nil {
		return ""
	}
	return strconv.FormatInt(s.clock.Now().UnixMicro(), 10)
}

func (s *Store) run(ctx context.Context, sc *script, key string, args ...any) (any, error) {
	keys := []string{s.redisKey(key)}
	res, err := s.client.EvalSha(ctx, sc.sha, keys, args...).Result()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		res, err = s.client.Eval(ctx, sc.src, keys, args...).Result()
	}
	return res, err
}

func parseClaim(key string, token uint64, res any) (idempotency.Claim, error) {
	a, ok := res.([]any)
	if !ok || len(a) < 2 {
		return idempotency.Claim{}, fmt.Errorf("unexpected script reply %v", res)
	}
	if won, _ := a[0].(int64); won == 1 {
		over, _ := a[1].(string)
		return idempotency.Claim{Won: true, Token: token, TakenOver: over == "1"}, nil
	}
	if len(a) != 7 {
		return idempotency.Claim{}, fmt.Errorf("unexpected script reply %v", res)
	}
	var f [6]string
	for i := range f {
		f[i], _ = a[i+1].(string)
	}
	rec, err := makeRecord(key, f[0], f[1], f[2], f[3], f[4], f[5])
	if err != nil {
		return idempotency.Claim{}, err
	}
	return idempotency.Claim{Record: rec}, nil
}

func makeRecord(key, fingerprint, token, state, value, lease, expires string) (idempotency.Record, error) {
	tok, err := strconv.ParseUint(token, 10, 64)
	if err != nil {
		return idempotency.Record{}, fmt.Errorf("corrupt record: token %q", token)
	}
	rec := idempotency.Record{Key: key, Token: tok, Completed: state == "1"}
	if fingerprint != "" {
		rec.Fingerprint = []byte(fingerprint)
	}
	if rec.Completed && value != "" {
		rec.Value = []byte(value)
	}
	if rec.LeaseExpiry, err = parseMicro(lease); err != nil {
		return idempotency.Record{}, err
	}
	if rec.Completed {
		if rec.ExpiresAt, err = parseMicro(expires); err != nil {
			return idempotency.Record{}, err
		}
	}
	return rec, nil
}

func parseMicro(s string) (time.Time, error) {
	us, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("corrupt record: time %q", s)
	}
	return time.UnixMicro(us).UTC(), nil
}

// newToken returns a random non-zero fencing token. Tokens must differ across
// every claim a key ever has, including claims after the record was deleted,
// so they are random rather than counted per key.
func newToken() uint64 {
	for {
		if t := rand.Uint64(); t != 0 {
			return t
		}
	}
}

type script struct{ src, sha string }

func newScript(src string) *script {
	return &script{src: src, sha: redis.NewScript(src).Hash()}
}
