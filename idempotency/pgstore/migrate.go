package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// SchemaVersion is the version of the schema that this package's statements
// need, which Migrate brings a table to and records in its version table.
const SchemaVersion = 1

// migrations[v-1] brings a schema from version v-1 to v. Each runs inside
// Migrate's transaction and creates only what is missing, so that a table
// made by a migration tool, or by a version of this package that kept no
// version table, is adopted without DDL against live traffic.
var migrations = []func(ctx context.Context, tx pgx.Tx, n schemaNames) error{
	migrate1,
}

// migrate1 creates the token sequence, the table and its expiry index.
func migrate1(ctx context.Context, tx pgx.Tx, n schemaNames) error {
	seq, err := exists(ctx, tx, n.rel(n.seqName))
	if err != nil {
		return err
	}
	if !seq {
		if _, err := tx.Exec(ctx, "CREATE SEQUENCE "+n.seq); err != nil {
			return err
		}
	}
	table, err := exists(ctx, tx, n.rel(n.tableName))
	if err != nil {
		return err
	}
	if !table {
		if _, err := tx.Exec(ctx, `CREATE TABLE `+n.table+` (
	key          text        PRIMARY KEY,
	fingerprint  bytea       NOT NULL,
	token        bigint      NOT NULL,
	completed    boolean     NOT NULL DEFAULT false,
	taken_over   boolean     NOT NULL DEFAULT false,
	value        bytea,
	lease_expiry timestamptz NOT NULL,
	expires_at   timestamptz NOT NULL
)`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "ALTER SEQUENCE "+n.seq+" OWNED BY "+n.column); err != nil {
			return err
		}
	}
	index, err := exists(ctx, tx, n.rel(n.indexName))
	if err != nil {
		return err
	}
	if !index {
		// The table is new, or one made elsewhere without the index: no
		// live claims wait on this lock in the first case.
		if _, err := tx.Exec(ctx, "CREATE INDEX "+pgx.Identifier{n.indexName}.Sanitize()+" ON "+n.table+" (expires_at)"); err != nil {
			return err
		}
	}
	return nil
}

// exists reports whether the relation r exists. It takes no lock. It reads
// pg_class rather than calling to_regclass, whose cache may still miss a
// relation that another transaction created while this one waited for the
// advisory lock.
func exists(ctx context.Context, q querier, r relation) (bool, error) {
	var ok bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_catalog.pg_class c
	JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relname = $2 AND n.nspname = coalesce($1, current_schema()))`, r.schema, r.name).Scan(&ok)
	return ok, err
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// version returns the schema version recorded in the version table, or 0 if
// there is none. It locks nothing but the version table, in ACCESS SHARE
// mode, which no claim conflicts with.
func (s *Store) version(ctx context.Context, q querier) (int, error) {
	ok, err := exists(ctx, q, s.names.rel(s.names.versionName))
	if err != nil || !ok {
		return 0, err
	}
	var v int
	err = q.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+s.names.version).Scan(&v)
	return v, err
}

// migrateTries bounds the attempts of Migrate to take the locks of its DDL,
// each waiting at most migrateLockTimeout, so that a migration never queues
// for long in front of live claims.
const (
	migrateTries       = 5
	migrateLockTimeout = "2s"
)

// Migrate brings the schema of the Store's table to SchemaVersion: the
// table, its token sequence, its expiry index, and a version table beside
// them (Config.Table + "_version") that records each version applied. It is
// safe to call on every start of every instance:
//
//   - Against an up-to-date schema it runs no DDL and takes no lock on the
//     table or the sequence: two queries read the version, and it returns.
//   - Otherwise, in one transaction, it takes a PostgreSQL advisory lock
//     that serializes migrations across instances, reads the version again,
//     applies the missing steps (each creates only what is missing) and
//     records the new version. DDL waits at most 2 s for its locks (a
//     lock_timeout), so that it never queues for long in front of live
//     claims; a lock timeout or a deadlock is retried, up to 5 attempts.
//
// A table made by an earlier version of this package, without a version
// table, is adopted as it is. A schema newer than SchemaVersion is left
// alone. Migrate returns the database's error, wrapped.
//
// For the default table, version 1 is the SQL below; a migration tool may
// apply it instead of Migrate (replacing the names for another
// Config.Table), and insert 1 into the version table, as its last line does.
// Fencing tokens come from the sequence, so they only grow and never repeat;
// expires_at is when the record stops counting: the lease expiry of an
// in-flight claim, the end of retention of a completed one.
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
func (s *Store) Migrate(ctx context.Context) error {
	v, err := s.version(ctx, s.pool)
	if err == nil && v >= SchemaVersion {
		return nil
	}
	for try := 1; ; try++ {
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return s.migrate(ctx, tx) })
		var pe *pgconn.PgError
		if err == nil || try == migrateTries || !errors.As(err, &pe) ||
			(pe.Code != "55P03" && pe.Code != "40P01") { // lock_not_available, deadlock_detected
			break
		}
		if serr := sleep(ctx, time.Duration(try)*100*time.Millisecond); serr != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("pgstore: migrate %s: %w", s.table, err)
	}
	return nil
}

// migrate runs in Migrate's transaction.
func (s *Store) migrate(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '"+migrateLockTimeout+"'"); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", s.lockID); err != nil {
		return err
	}
	v, err := s.version(ctx, tx)
	if err != nil {
		return err
	}
	if v >= SchemaVersion {
		return nil // another instance migrated meanwhile
	}
	if v == 0 {
		if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+s.names.version+
			" (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"); err != nil {
			return err
		}
	}
	for next := v + 1; next <= SchemaVersion; next++ {
		if err := migrations[next-1](ctx, tx, s.names); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+s.names.version+" (version) VALUES ($1)", next); err != nil {
			return err
		}
	}
	return nil
}

// sleep waits for d on the wall clock, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
