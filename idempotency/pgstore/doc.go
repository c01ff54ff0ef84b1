// Package pgstore is an [idempotency.Store] kept in a PostgreSQL table, for a
// fleet of service instances that already share a database, with one thing
// no other store offers: [Store.CompleteTx] stores a result in the same transaction
// as the business write, and checks the claim's fencing token there, so that
// the two commit or roll back together and a run whose lease was taken over
// cannot commit (the "atomic phases" of Brandur Leach's idempotency keys).
//
//	pool, err := pgxpool.New(ctx, "postgres://app@db/orders")
//	store, err := pgstore.New(pgstore.Config{Pool: pool})
//	err = store.Migrate(ctx) // on every start: no DDL once the schema is current
//	err = store.Start(ctx)   // optional: a reaper keeps the table small
//	defer store.Close()
//
// [New] does no I/O and starts no goroutine; its errors wrap
// [ErrInvalidConfig]. Every operation checks expiry itself, so expired rows
// are harmless: [Store.Reap], or the reaper that [Store.Start] starts until
// [Store.Close], deletes them only to keep the table small.
//
// # Schema
//
// [Store.Migrate] brings the schema to [SchemaVersion] and records each
// version applied in a table beside the records (Config.Table + "_version").
// Against an up-to-date schema it only reads that version: no DDL, and no
// lock on the records table or its sequence, so instances start and stop
// freely under live traffic. Its documentation has the schema's SQL, for
// migration tools, and how migrations are serialized.
//
// # Statements and clocks
//
// Each operation but CompleteTx is one statement in its own implicit
// transaction, never inside the caller's business transaction (where a claim
// would make every duplicate wait behind the whole request); a replay is one
// statement that writes nothing. Fencing tokens come from a sequence, so they
// only grow and never repeat. Every expiry is decided by the server's clock,
// so a skewed client clock cannot shorten a lease: [Store] lists the
// statements and the clock each reads.
//
// # Transactional completion
//
// The Engine claims the key before the operation opens its transaction and
// puts the run's Lease in the operation's context; the operation writes its
// rows and calls [Store.CompleteTx], whose documentation shows the code, as
// the last statement before Commit: duplicates wait for the commit only from
// that call on.
//
// # Failures
//
// Every database error is returned wrapped with the operation and the key
// ("pgstore: claim \"k\": failed to connect to …: connection refused"), or
// the table for Migrate and Reap, so callers may test it with errors.Is for
// context.DeadlineExceeded and the like. A claim whose reply was lost leaves
// the key in flight until its lease passes, after which any instance takes
// it over.
package pgstore
