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
// # Schema and migrations
//
// [Store.Migrate] brings the schema to [SchemaVersion] and records each version applied
// in a table beside the records (Config.Table + "_version"). Against an
// up-to-date schema it only reads that version: no DDL, and no lock on the
// records table or its sequence, so instances start and stop freely under
// live traffic. Otherwise it takes an advisory lock that serializes
// migrations across instances, applies the missing steps, each of which
// creates only what is missing, and records the version; DDL waits at most 2
// seconds for its locks and is retried on a lock timeout or a deadlock. A
// table made by an earlier version of this package, without a version table,
// is adopted as it is. For the default table, version 1 is the SQL below; a
// migration tool may apply it instead (replacing the names for another
// Config.Table), and insert 1 into the version table.
//
//	CREATE TABLE bulwark_idempotency_version (
//		version    integer     PRIMARY KEY,
//		applied_at timestamptz NOT NULL DEFAULT now()
//	);
//	CREATE SEQUENCE bulwark_idempotency_token_seq;
//	CREATE TABLE bulwark_idempotency (
//		key          text        PRIMARY KEY,
//		fingerprint  bytea       NOT NULL,
//		token        bigint      NOT NULL,
//		completed    boolean     NOT NULL DEFAULT false,
//		taken_over   boolean     NOT NULL DEFAULT false,
//		value        bytea,
//		lease_expiry timestamptz NOT NULL,
//		expires_at   timestamptz NOT NULL
//	);
//	ALTER SEQUENCE bulwark_idempotency_token_seq OWNED BY bulwark_idempotency.token;
//	CREATE INDEX bulwark_idempotency_expires_idx ON bulwark_idempotency (expires_at);
//	INSERT INTO bulwark_idempotency_version (version) VALUES (1);
//
// expires_at is when the record stops counting: the lease expiry of an
// in-flight claim, the end of retention of a completed one. Fencing tokens
// come from the sequence, so they only grow and never repeat.
//
// # Statements
//
// Each operation is one statement in its own implicit transaction, never
// inside the caller's business transaction (where a claim would make every
// duplicate wait behind the whole request):
//
//   - Claim: one statement of three parts. INSERT … ON CONFLICT DO NOTHING
//     claims a free key; a conditional UPDATE takes over a record whose
//     expires_at has passed, issuing a new token (PostgreSQL re-checks the
//     condition on the newest version of a row changed meanwhile, so only
//     one takeover wins); otherwise the live record is read and returned,
//     value included. A replay is therefore one statement that writes
//     nothing. The read sees the statement's snapshot: when a concurrent
//     change makes it miss the row or see it expired, Claim runs the
//     statement again, which only a race costs.
//   - Extend: UPDATE … SET lease_expiry WHERE key, token match, not
//     completed, lease live.
//   - Complete: UPDATE … WHERE the same.
//   - Release: DELETE with the same conditions.
//   - Get: SELECT … WHERE expires_at is after now.
//
// Every expiry is decided by the server's clock: now() in the statements
// that run in their own transaction (its start, which follows the client's
// sending), clock_timestamp() in those that may run in a longer one (Extend,
// Complete, CompleteTx, Release), to the microsecond, with durations rounded
// up so that a lease never ends early. A client whose clock is skewed cannot
// shorten another's lease. [Config].TestClock replaces the server's clock,
// for tests only.
//
// # Transactional completion
//
// The Engine claims the key before the operation opens its transaction and
// puts the run's Lease in the operation's context; the operation writes its
// rows and calls CompleteTx, with the result encoded as the Engine would
// (idempotency.EncodeResult for Do, idempotency.EncodeResponse for the HTTP
// middleware), as the last statement before Commit:
//
//	order, err := idempotency.Do(ctx, engine, key, fp, func(ctx context.Context) (Order, error) {
//		var o Order
//		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
//			if err := tx.QueryRow(ctx, "INSERT INTO orders … RETURNING id").Scan(&o.ID); err != nil {
//				return err
//			}
//			v, err := idempotency.EncodeResult(o)
//			if err != nil {
//				return err
//			}
//			return store.CompleteTx(ctx, tx, idempotency.LeaseFromContext(ctx), v)
//		})
//		return o, err
//	})
//
// CompleteTx tells the Lease, so the Engine stores nothing more. Between
// CompleteTx and the commit the record is locked: a duplicate's claim waits
// for the commit (or rollback) and is then answered as in flight, or with
// the committed result, so keep that window short. Before CompleteTx the
// business transaction holds nothing of the store, and duplicates get an
// immediate in-flight answer. If the transaction rolls back, the claim stays
// in flight and the Engine releases it when the operation fails. If
// CompleteTx returns ErrFenced, another run owns the key and the transaction
// must roll back, which BeginFunc does.
//
// # Reaping
//
// Every operation checks expiry itself, so expired rows are harmless;
// [Store.Reap] (or the reaper that [Store.Start] starts, every
// Config.ReapInterval, until [Store.Close]) deletes them in batches, skipping
// rows that are locked. [New] does no I/O and starts no goroutine; its errors
// wrap [ErrInvalidConfig].
//
// # Failures
//
// Every database error is returned wrapped with the operation and the key
// ("pgstore: claim \"k\": failed to connect to …: connection refused"), so
// callers may test it with errors.Is for context.DeadlineExceeded and the
// like. A claim whose reply was lost leaves the key in flight until its
// lease passes, after which any instance takes it over.
package pgstore
