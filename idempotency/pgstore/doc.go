// Package pgstore is an idempotency.Store kept in a PostgreSQL table, for a
// fleet of service instances that already share a database, with one thing
// no other store offers: CompleteTx stores a response in the same
// transaction as the business write, so that the two commit or roll back
// together (the "atomic phases" of Brandur Leach's idempotency keys).
//
//	pool, err := pgxpool.New(ctx, "postgres://app@db/orders")
//	store, err := pgstore.New(pgstore.Config{Pool: pool})
//	err = store.Migrate(ctx) // once per deployment; safe to repeat
//	go store.RunReaper(ctx)  // optional: keeps the table small
//
// # Schema
//
// Migrate creates the table, its token sequence and its expiry index if they
// do not exist; concurrent calls are serialised by an advisory lock. For the
// default table the SQL is below; a migration tool may apply it instead
// (replacing the names for another Config.Table).
//
//	CREATE SEQUENCE IF NOT EXISTS bulwark_idempotency_token_seq;
//	CREATE TABLE IF NOT EXISTS bulwark_idempotency (
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
//	CREATE INDEX IF NOT EXISTS bulwark_idempotency_expires_idx ON bulwark_idempotency (expires_at);
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
//   - Complete: UPDATE … WHERE key, token match, not completed, lease live.
//   - Release: DELETE with the same conditions.
//   - Get: SELECT … WHERE expires_at is after now.
//
// Leases and retention are decided against the Store's Clock, whose time is
// passed with each statement, kept to the microsecond and rounded so that a
// lease never ends early.
//
// # Transactional completion
//
// The handler claims the key (through the idempotency engine) before it
// opens its transaction, then writes its rows and calls CompleteTx as the
// last statement before Commit:
//
//	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
//		if _, err := tx.Exec(ctx, "INSERT INTO orders …"); err != nil {
//			return err
//		}
//		return store.CompleteTx(ctx, tx, key, token, response, 24*time.Hour)
//	})
//
// Between CompleteTx and the commit the record is locked: a duplicate's
// claim waits for the commit (or rollback) and is then answered as in
// flight, or with the committed result, so keep that window short. Before
// CompleteTx the business transaction holds nothing of the store, and
// duplicates get an immediate in-flight answer. If the transaction rolls
// back, the claim stays in flight: its owner may Release it, or it is taken
// over when its lease passes. If CompleteTx
// returns ErrFenced, another run owns the key and the transaction must roll
// back, which BeginFunc does.
//
// # Reaping
//
// Every operation checks expiry itself, so expired rows are harmless; Reap
// (or RunReaper, every Config.ReapInterval) deletes them in batches, skipping
// rows that are locked.
//
// # Failures
//
// Every database error is returned wrapped with the operation and the key
// ("pgstore: claim \"k\": failed to connect to …: connection refused"), so
// callers may test it with errors.Is for context.DeadlineExceeded and the
// like. A claim whose reply was lost leaves the key in flight until its
// lease passes, after which any instance takes it over.
//
// # Tests
//
// The tests run against a real server named by BULWARK_POSTGRES_URL, each in
// a schema of its own that is dropped at the end. When it is unset they skip,
// except under CI=true, where they fail:
//
//	BULWARK_POSTGRES_URL='postgres://postgres:bulwark@127.0.0.1:5432/bulwark_test?sslmode=disable' go test -race ./...
package pgstore
