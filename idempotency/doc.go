// Package idempotency makes retried requests safe: an operation runs at most
// once per idempotency key, a retry gets the first run's result replayed, a
// retry that arrives while the first still runs is told so, and a key reused
// with a different payload is refused. It implements the semantics of the
// IETF draft "The Idempotency-Key HTTP Header Field" and of Stripe's API.
//
// Use the HTTP middleware in front of handlers that create things:
//
//	store, _ := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
//	engine, _ := idempotency.New(idempotency.Config{Store: store})
//	idem, _ := idempotency.Middleware(idempotency.HTTPConfig{Engine: engine})
//	mux.Handle("POST /orders", idem(createOrder))
//
// or Do around any operation that returns a value:
//
//	ch, err := idempotency.Do(ctx, engine, key, fingerprint, func(ctx context.Context) (Charge, error) {
//		return payments.Charge(ctx, key, amount) // forward the key downstream
//	})
//
// # How it works
//
// A Store holds a record per key. The first request claims the key with a
// lease and a fencing token; when it finishes it completes the key with its
// result, kept for a retention period (24 hours by default), or releases it
// on a failure worth retrying (a 5xx, a transient error) so that the client's
// retry runs again. A claim whose process died is not a lock forever: when
// its lease ends, a duplicate takes it over, and the dead run's late
// completion is refused because its token is stale. Every request carries a
// fingerprint of its payload; a duplicate whose fingerprint differs is
// refused (422 in HTTP, ErrMismatch from Do).
//
// Within one process, concurrent duplicates of a key share one Claim
// (singleflight), and can wait for the first run instead of failing with a
// conflict (Config.Wait). Across processes, the Store decides: MemoryStore
// is for one process; the redisstore and pgstore modules share records
// between instances. Every Store passes idempotencytest.RunStore.
//
// # Which outcomes are kept
//
// Do keeps successful results (as JSON) and errors marked with
// bulwark.Permanent, which no retry could fix (a declined card), and replays
// the latter as a permanent *ReplayedError; any other error releases the key.
// The middleware keeps 2xx and 4xx responses except 408, 409 and 429, and
// releases the key on 5xx. Both are configurable.
//
// # Failures of the store
//
// If the Store cannot claim a key, the request fails closed (503; ErrStore)
// by default, or, with Config.FailOpen, runs without protection. Both are
// reported to the Observer as EventStoreError. A failure to store the outcome
// after the run is reported too; the caller still gets the run's result.
package idempotency
