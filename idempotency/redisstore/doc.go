// Package redisstore is an idempotency.Store kept in Redis, for a fleet of
// service instances that must share one view of their idempotency keys.
//
//	rdb := redis.NewUniversalClient(&redis.UniversalOptions{
//		Addrs:                 []string{"127.0.0.1:6379"},
//		ContextTimeoutEnabled: true,
//	})
//	store, err := redisstore.New(redisstore.Config{Client: rdb})
//
// Any redis.UniversalClient works: a single node, a Sentinel failover client
// or a Redis Cluster. The client must honour context deadlines
// (ContextTimeoutEnabled), so that a slow or unreachable server costs a
// request no more than its deadline.
//
// # Data model
//
// Each idempotency key k is one Redis hash named Prefix + "{" + k + "}"; the
// braces are a Cluster hash tag, so a key's data never spans slots. Claim,
// Complete and Release are Lua scripts, each one round trip: Claim sets the
// in-flight record or returns the live one, value included, so a replay is a
// single call; Complete and Release check the fencing token inside the script.
// Fencing tokens are random 64-bit numbers, so a token never comes back even
// after a key's record is deleted and claimed again.
//
// Leases and retention are decided against the Store's Clock, whose time is
// passed to the scripts with each call (kept to the microsecond, rounded so
// that a lease never ends early). The Redis TTL of each record is its lease
// or retention plus Config.ExpiryGrace and only collects garbage: no reaper
// is needed.
//
// # Failures
//
// Every error of the client is returned wrapped with the operation and the
// key ("redisstore: claim \"k\": dial tcp …: connection refused"), so callers
// may test it with errors.Is for context.DeadlineExceeded and the like. A
// claim whose reply was lost leaves the key in flight until its lease passes,
// after which any instance takes it over. The Store never retries by itself;
// the client's own retries (MaxRetries) are safe: the Claim and Complete
// scripts recognise a repeat of their own earlier success, and a repeated
// Release reports ErrFenced, since the claim it removed is gone.
//
// # Durability
//
// A claim is as durable as the Redis deployment that holds it. Run Redis with
// maxmemory-policy noeviction (or memory to spare), since an evicted
// in-flight record lets a duplicate run. Replication is asynchronous, so a
// failover can lose the latest claims and completions, and a duplicate that
// arrives then runs again; where that is not acceptable, keep the records in
// PostgreSQL with pgstore, whose CompleteTx also ties them to the business
// write.
//
// # Tests
//
// The tests run against a real server named by BULWARK_REDIS_ADDR
// (host:port). When it is unset they skip, except under CI=true, where they
// fail:
//
//	BULWARK_REDIS_ADDR=127.0.0.1:6379 go test -race ./...
package redisstore
