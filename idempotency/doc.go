// Package idempotency makes retried requests safe: an operation runs at most
// once per idempotency key, a retry gets the first run's result replayed, a
// retry that arrives while the first still runs is told so, and a key reused
// with a different payload is refused. It implements the semantics of the
// IETF draft "The Idempotency-Key HTTP Header Field" and of Stripe's API.
//
// Use the HTTP [Middleware] in front of handlers that create things, or [Do]
// around any operation that returns a value:
//
//	store, _ := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
//	engine, _ := idempotency.New(idempotency.Config{Store: store})
//	idem, _ := idempotency.Middleware(idempotency.HTTPConfig{Engine: engine})
//	mux.Handle("POST /orders", idem(createOrder))
//	ch, err := idempotency.Do(ctx, engine, key, fingerprint, func(ctx context.Context) (Charge, error) {
//		return payments.Charge(ctx, key, amount) // forward the key downstream
//	})
//
// A [Store] holds a record per key: the first request claims it with a lease
// and a fencing token, then completes it with its result (kept 24 hours by
// default) or, on a failure worth retrying (a 5xx, a transient error),
// releases it so that the client's retry runs again; a duplicate whose
// fingerprint differs is refused (422 in HTTP, [ErrMismatch] from Do). The
// [Engine] renews a live run's lease, hands a dead run's key over when its
// lease ends, and coalesces duplicates within a process. [MemoryStore] is for
// one process; the redisstore and pgstore modules share records between
// instances. The details are on the names: the outcomes kept on
// [Config].CacheError and [HTTPConfig].Cacheable, store failures on
// [Config].FailOpen, exactly once with the business write on [Lease], lost
// leases on [ErrLeaseLost], the events on [Engine].
//
// Conventions, as in every bulwark package: [New] and [NewMemoryStore] never
// start a goroutine, and their errors, and Middleware's, wrap
// [ErrInvalidConfig]. An Engine has no background work of its own (its
// renewal timer runs only while runs are in flight); a MemoryStore's janitor
// runs between [MemoryStore.Start] and [MemoryStore.Close].
package idempotency
