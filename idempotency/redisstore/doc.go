// Package redisstore is an [idempotency.Store] kept in Redis, for a fleet of
// service instances that must share one view of their idempotency keys.
//
//	rdb := redis.NewUniversalClient(&redis.UniversalOptions{
//		Addrs:                 []string{"127.0.0.1:6379"},
//		ContextTimeoutEnabled: true,
//	})
//	store, err := redisstore.New(redisstore.Config{Client: rdb})
//
// Any redis.UniversalClient works: a single node or a Redis Cluster, both
// tested against real servers (a three-node cluster in CI). The client must
// honour context deadlines (ContextTimeoutEnabled), so that a slow or
// unreachable server costs a request no more than its deadline; [New]
// refuses one that does not, with an error wrapping [ErrInvalidConfig].
//
// # Data model
//
// Each idempotency key is one Redis hash in one Cluster slot, and each
// operation one Lua script: one round trip (a replay is a single call), with
// the fencing token checked inside the script, and every lease and retention
// decided by the server's clock (Redis TIME), so that a client whose clock is
// skewed cannot shorten another's lease. The Redis TTL only collects garbage:
// no reaper is needed, and a [Store] (see it for the details) has no
// background work.
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
// # Exactly once with the business write
//
// No transaction spans Redis and the business database, so a process that
// dies after its business write and before completing its key leaves the key
// to be taken over and run again. Give the business table a unique
// constraint on the tenant and the idempotency key, and have the operation
// return the existing row's result when its insert conflicts: the second run
// then answers what the first wrote.
package redisstore
