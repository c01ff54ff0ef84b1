// Package idempotency makes retried requests safe: an operation runs at most
// once per idempotency key, a retry gets the first run's result replayed, a
// retry that arrives while the first still runs is told so, and a key reused
// with a different payload is refused. It implements the semantics of the
// IETF draft "The Idempotency-Key HTTP Header Field" and of Stripe's API.
//
// Use the HTTP [Middleware] in front of handlers that create things:
//
//	store, _ := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
//	engine, _ := idempotency.New(idempotency.Config{Store: store})
//	idem, _ := idempotency.Middleware(idempotency.HTTPConfig{Engine: engine})
//	mux.Handle("POST /orders", idem(createOrder))
//
// or [Do] around any operation that returns a value:
//
//	ch, err := idempotency.Do(ctx, engine, key, fingerprint, func(ctx context.Context) (Charge, error) {
//		return payments.Charge(ctx, key, amount) // forward the key downstream
//	})
//
// # How it works
//
// A [Store] holds a record per key. The first request claims the key with a
// lease and a fencing token; when it finishes it completes the key with its
// result, kept for a retention period (24 hours by default), or releases it
// on a failure worth retrying (a 5xx, a transient error) so that the client's
// retry runs again. Every request carries a fingerprint of its payload; a
// duplicate whose fingerprint differs is refused (422 in HTTP, [ErrMismatch]
// from Do).
//
// While a run goes on, the [Engine] renews its lease (Store.Extend, every
// third of [Config].Lease), so a slow run keeps its key however long it takes. A
// claim whose process died is not a lock forever: it stops being renewed, and
// when its lease ends a duplicate takes it over, while the dead run's late
// completion is refused because its token is stale. If the Engine can no
// longer guarantee a live run's lease (the key was taken over, or the Store
// was unreachable for two thirds of a lease), it ends the run's context with
// the cause [ErrLeaseLost]. Expiry is decided by the Store's clock (the Redis or
// PostgreSQL server's), never by a client's, so a client whose clock is skewed
// cannot take a lease over early.
//
// Within one process, concurrent duplicates of a key share one Claim
// (singleflight), and can wait for the first run instead of failing with a
// conflict (Config.Wait). Across processes, the Store decides: [MemoryStore]
// is for one process; the redisstore and pgstore modules share records
// between instances. Every Store passes idempotencytest.RunStore.
//
// # Exactly once, with the business write
//
// A process can die after its business write and before its key is
// completed; a duplicate then runs again. Two defences close that gap. Where
// the keys and the business data share PostgreSQL, the operation completes
// its key inside its own transaction: the run's Lease is in its context
// ([LeaseFromContext]), pgstore's CompleteTx checks the fencing token and
// stores the result in that transaction, and the Engine then stores nothing
// more. The result is encoded as the Engine would ([EncodeResult],
// [EncodeError], [EncodeResponse]), so duplicates get it replayed like any other:
//
//	order, err := idempotency.Do(ctx, engine, key, fp, func(ctx context.Context) (Order, error) {
//		var o Order
//		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
//			if err := insertOrder(ctx, tx, &o); err != nil {
//				return err
//			}
//			v, err := idempotency.EncodeResult(o)
//			if err != nil {
//				return err
//			}
//			return keys.CompleteTx(ctx, tx, idempotency.LeaseFromContext(ctx), v)
//		})
//		return o, err
//	})
//
// Elsewhere (keys in Redis), the business table's unique constraint on the
// tenant and the key is the second line: a run that finds its key's row
// already written returns that row's result instead of writing another.
//
// # Which outcomes are kept
//
// Do keeps successful results (as JSON) and errors marked with
// bulwark.Permanent, which no retry could fix (a declined card), and replays
// the latter as a permanent [*ReplayedError]; any other error releases the key.
// The middleware keeps 2xx and 4xx responses except 408, 409 and 429, and
// releases the key on 5xx. Both are configurable ([Config].CacheError,
// [HTTPConfig].Cacheable).
//
// # Failures of the store
//
// If the Store cannot claim a key, the request fails closed (503; [ErrStore])
// by default, or, with Config.FailOpen, runs without protection. Both are
// reported to the Observer as EventStoreError. A failure to store the outcome
// after the run is reported too; the caller still gets the run's result. The
// events the Engine emits are listed on [Engine].
//
// Conventions, as in every bulwark package: [New] and [NewMemoryStore] never
// start a goroutine, and their errors, and Middleware's, wrap
// [ErrInvalidConfig]. An Engine has no background work of its own (its
// renewal timer runs only while runs are in flight); a MemoryStore's janitor
// runs between [MemoryStore.Start] and [MemoryStore.Close].
package idempotency
