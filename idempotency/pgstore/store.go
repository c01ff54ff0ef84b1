package pgstore

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"strings"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

var _ idempotency.Store = (*Store)(nil)

// DefaultTable is the table used when Config.Table is empty.
const DefaultTable = "bulwark_idempotency"

// Config configures a Store. The zero value is not usable: Pool is required.
type Config struct {
	// Pool is the connection pool the Store runs its statements on, each
	// in its own short transaction. Required.
	Pool *pgxpool.Pool

	// Table names the table of records, optionally qualified by its schema
	// ("idem.records"); the schema must exist. Each part is a letter or an
	// underscore followed by letters, digits and underscores, and is used
	// as written, case included; the table part is at most 50 bytes, since
	// the names of its sequence and index are derived from it. If empty,
	// DefaultTable.
	Table string

	// Clock is the time source against which leases and retention are
	// decided. If nil, the wall clock.
	Clock bulwark.Clock

	// ReapInterval is the time between two passes of RunReaper. If zero,
	// one minute; negative is an error.
	ReapInterval time.Duration

	// ReapBatch is the most records one DELETE of the reaper removes, so
	// that no pass holds many row locks for long. If zero, 1000; negative
	// is an error.
	ReapBatch int

	// Observer receives an EventStoreError, with Reason "reap", for each
	// failed pass of RunReaper. If nil, no events.
	Observer bulwark.Observer

	// Name is the Event.Name of the Store's events.
	Name string
}

// Store is an idempotency.Store kept in a PostgreSQL table. Each of Claim,
// Complete, Release and Get is one statement run in its own implicit
// transaction; CompleteTx completes a key inside the caller's transaction. A
// Store is safe for concurrent use by multiple goroutines, and any number of
// Stores in any number of processes may share one table.
type Store struct {
	pool     *pgxpool.Pool
	clock    bulwark.Clock
	interval time.Duration
	batch    int
	obs      bulwark.Observer
	name     string
	table    string // the table, quoted
	lockID   int64  // advisory lock of Migrate

	schema, claimSQL, completeSQL, releaseSQL, getSQL, reapSQL string
}

// New returns a Store for cfg. It does no I/O: call Migrate, or apply the
// schema in the package documentation, before the first use. It returns an
// error if cfg.Pool is nil, cfg.Table is not a valid name, or
// cfg.ReapInterval or cfg.ReapBatch is negative.
func New(cfg Config) (*Store, error) {
	if cfg.Pool == nil {
		return nil, errors.New("pgstore: Config.Pool is nil")
	}
	if cfg.ReapInterval < 0 {
		return nil, fmt.Errorf("pgstore: Config.ReapInterval is %v, want >= 0", cfg.ReapInterval)
	}
	if cfg.ReapBatch < 0 {
		return nil, fmt.Errorf("pgstore: Config.ReapBatch is %d, want >= 0", cfg.ReapBatch)
	}
	name := cfg.Table
	if name == "" {
		name = DefaultTable
	}
	ident, err := parseTable(name)
	if err != nil {
		return nil, err
	}
	s := &Store{
		pool:     cfg.Pool,
		clock:    bulwark.ClockOrWall(cfg.Clock),
		interval: cfg.ReapInterval,
		batch:    cfg.ReapBatch,
		obs:      cfg.Observer,
		name:     cfg.Name,
	}
	if s.interval == 0 {
		s.interval = time.Minute
	}
	if s.batch == 0 {
		s.batch = 1000
	}
	base := ident[len(ident)-1]
	seq := append(append(pgx.Identifier(nil), ident[:len(ident)-1]...), base+"_token_seq").Sanitize()
	s.table = ident.Sanitize()
	h := fnv.New64a()
	h.Write([]byte("bulwark/pgstore " + s.table))
	s.lockID = int64(h.Sum64())
	r := strings.NewReplacer("$TABLE", s.table, "$SEQ", seq,
		"$IDXNAME", pgx.Identifier{base + "_expires_idx"}.Sanitize(),
		"$COLUMN", append(append(pgx.Identifier(nil), ident...), "token").Sanitize())
	s.schema = r.Replace(schemaSQL)
	s.claimSQL = r.Replace(claimSQL)
	s.completeSQL = r.Replace(completeSQL)
	s.releaseSQL = r.Replace(releaseSQL)
	s.getSQL = r.Replace(getSQL)
	s.reapSQL = r.Replace(reapSQL)
	return s, nil
}

func parseTable(name string) (pgx.Identifier, error) {
	parts := strings.Split(name, ".")
	if len(parts) > 2 {
		return nil, fmt.Errorf("pgstore: Config.Table %q has more than a schema and a table", name)
	}
	for _, p := range parts {
		if !validName(p) {
			return nil, fmt.Errorf("pgstore: Config.Table %q: %q is not a letter or underscore followed by letters, digits and underscores", name, p)
		}
	}
	if base := parts[len(parts)-1]; len(base) > 50 {
		return nil, fmt.Errorf("pgstore: Config.Table %q: table name longer than 50 bytes", name)
	}
	if len(parts[0]) > 63 {
		return nil, fmt.Errorf("pgstore: Config.Table %q: schema name longer than 63 bytes", name)
	}
	return pgx.Identifier(parts), nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// schemaSQL creates the table; the package documentation shows it for the
// default table.
const schemaSQL = `
CREATE SEQUENCE IF NOT EXISTS $SEQ;
CREATE TABLE IF NOT EXISTS $TABLE (
	key          text        PRIMARY KEY,
	fingerprint  bytea       NOT NULL,
	token        bigint      NOT NULL,
	completed    boolean     NOT NULL DEFAULT false,
	taken_over   boolean     NOT NULL DEFAULT false,
	value        bytea,
	lease_expiry timestamptz NOT NULL,
	expires_at   timestamptz NOT NULL
);
ALTER SEQUENCE $SEQ OWNED BY $COLUMN;
CREATE INDEX IF NOT EXISTS $IDXNAME ON $TABLE (expires_at);
`

// claimSQL claims a key in one statement of three parts, all on the
// statement's snapshot:
//   - INSERT … ON CONFLICT DO NOTHING claims a free key. On a conflict it
//     neither locks nor waits for the row, so a replay writes nothing.
//   - A conditional UPDATE takes over a record whose expires_at has passed
//     (the lease of an in-flight record, the retention of a completed one).
//     If the row changed since the snapshot, PostgreSQL re-checks the
//     condition on the newest version, so only one takeover wins.
//   - Otherwise the record is read and returned, value included.
//
// The read sees the snapshot: a row inserted since is missing, and a row
// taken over since still looks expired. Claim retries the statement in
// those two cases, which only a race brings. $1 key, $2 fingerprint, $3 now,
// $4 lease expiry.
const claimSQL = `
WITH inserted AS (
	INSERT INTO $TABLE (key, fingerprint, token, lease_expiry, expires_at)
	VALUES ($1, $2, nextval('$SEQ'), $4, $4)
	ON CONFLICT (key) DO NOTHING
	RETURNING token, taken_over
), taken AS (
	UPDATE $TABLE r SET fingerprint = $2, token = nextval('$SEQ'), completed = false,
		taken_over = NOT r.completed, value = NULL, lease_expiry = $4, expires_at = $4
	WHERE r.key = $1 AND r.expires_at <= $3 AND NOT EXISTS (SELECT FROM inserted)
	RETURNING r.token, r.taken_over
)
SELECT true, token, taken_over, NULL::bytea, false, NULL::bytea, NULL::timestamptz, NULL::timestamptz FROM inserted
UNION ALL
SELECT true, token, taken_over, NULL, false, NULL, NULL, NULL FROM taken
UNION ALL
SELECT false, token, taken_over, fingerprint, completed, value, lease_expiry, expires_at
FROM $TABLE WHERE key = $1 AND NOT EXISTS (SELECT FROM inserted) AND NOT EXISTS (SELECT FROM taken)`

// completeSQL: $1 key, $2 token, $3 value, $4 expiry, $5 now.
const completeSQL = `
UPDATE $TABLE SET completed = true, value = $3, expires_at = $4
WHERE key = $1 AND token = $2 AND NOT completed AND lease_expiry > $5`

// releaseSQL: $1 key, $2 token, $3 now.
const releaseSQL = `
DELETE FROM $TABLE WHERE key = $1 AND token = $2 AND NOT completed AND lease_expiry > $3`

// getSQL: $1 key, $2 now.
const getSQL = `
SELECT fingerprint, token, completed, value, lease_expiry, expires_at
FROM $TABLE WHERE key = $1 AND expires_at > $2`

// reapSQL deletes up to $2 records expired at $1, skipping rows that a
// claim or a business transaction holds.
const reapSQL = `
WITH doomed AS (
	SELECT key FROM $TABLE WHERE expires_at <= $1
	ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
DELETE FROM $TABLE t USING doomed WHERE t.key = doomed.key AND t.expires_at <= $1`

// Migrate creates the table, its token sequence and its index if they do not
// exist. Concurrent calls, from any number of processes, are serialised by
// an advisory lock. It returns the database's error, wrapped.
func (s *Store) Migrate(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", s.lockID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, s.schema)
		return err
	})
	if err != nil {
		return fmt.Errorf("pgstore: migrate %s: %w", s.table, err)
	}
	return nil
}

// maxClaimTries bounds the statements of one Claim. A second is needed only
// when the key changed between the statement's snapshot and its insert.
const maxClaimTries = 8

// Claim implements idempotency.Store.Claim with one statement: INSERT … ON
// CONFLICT DO NOTHING, a conditional UPDATE that takes over an expired
// record, and otherwise a read of the live record, value included, so that a
// replay is one query and writes nothing. It runs in its own implicit
// transaction, never in a caller's. It waits only for a transaction that
// holds the record, which CompleteTx does from its call to the commit; it
// then answers from the state it began with (in flight) or the committed
// one. A race with a concurrent change of the key costs another statement.
// Claim returns an error if lease is not positive or out of range, or if the
// key changed under each of 8 statements in a row; otherwise only errors of
// the database, such as an unreachable server or the end of ctx, wrapped
// with the operation and key.
func (s *Store) Claim(ctx context.Context, key string, fingerprint []byte, lease time.Duration) (idempotency.Claim, error) {
	if err := ctx.Err(); err != nil {
		return idempotency.Claim{}, fmt.Errorf("pgstore: claim %q: %w", key, err)
	}
	if lease <= 0 {
		return idempotency.Claim{}, fmt.Errorf("pgstore: claim %q: lease is %v, want > 0", key, lease)
	}
	if fingerprint == nil {
		fingerprint = []byte{}
	}
	for range maxClaimTries {
		now := s.clock.Now()
		expiry, err := expiryOf(now, lease)
		if err != nil {
			return idempotency.Claim{}, fmt.Errorf("pgstore: claim %q: %w", key, err)
		}
		var (
			won, over, completed bool
			token                int64
			fp, value            []byte
			leaseExp, exp        *time.Time
		)
		err = s.pool.QueryRow(ctx, s.claimSQL, key, fingerprint, floorMicro(now), expiry).
			Scan(&won, &token, &over, &fp, &completed, &value, &leaseExp, &exp)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			continue // inserted since the snapshot: look again
		case err != nil:
			return idempotency.Claim{}, fmt.Errorf("pgstore: claim %q: %w", key, err)
		case won:
			return idempotency.Claim{Won: true, Token: uint64(token), TakenOver: over}, nil
		case !now.Before(*exp):
			continue // taken over or completed since the snapshot: look again
		}
		return idempotency.Claim{Record: makeRecord(key, fp, token, completed, value, *leaseExp, *exp)}, nil
	}
	return idempotency.Claim{}, fmt.Errorf("pgstore: claim %q: the record kept changing under %d attempts", key, maxClaimTries)
}

// Complete implements idempotency.Store.Complete with one UPDATE. It returns
// an error wrapping idempotency.ErrFenced when token is not the live
// in-flight claim's (its lease passed, it was taken over, released or
// completed), an error if retention is not positive, and otherwise only
// errors of the database.
func (s *Store) Complete(ctx context.Context, key string, token uint64, value []byte, retention time.Duration) error {
	return s.complete(ctx, s.pool, "complete", key, token, value, retention)
}

// CompleteTx is Complete run inside tx, the caller's transaction, so that the
// result is stored if and only if tx commits: the business write and the
// idempotency record commit or roll back together. If tx rolls back, the
// claim stays in flight and its owner may still Release it.
//
// The UPDATE locks the record until tx ends, so duplicates of the key wait
// for the outcome rather than seeing it half-done: call CompleteTx as the last
// statement before Commit, to keep that wait short. It returns an error wrapping idempotency.ErrFenced
// when token is not the live in-flight claim's, in which case the caller must
// roll tx back, since another run owns the key; other errors are the
// database's.
func (s *Store) CompleteTx(ctx context.Context, tx pgx.Tx, key string, token uint64, value []byte, retention time.Duration) error {
	if tx == nil {
		return fmt.Errorf("pgstore: complete %q in tx: tx is nil", key)
	}
	return s.complete(ctx, tx, "complete", key, token, value, retention)
}

type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func (s *Store) complete(ctx context.Context, db execer, op, key string, token uint64, value []byte, retention time.Duration) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pgstore: %s %q: %w", op, key, err)
	}
	if retention <= 0 {
		return fmt.Errorf("pgstore: %s %q: retention is %v, want > 0", op, key, retention)
	}
	now := s.clock.Now()
	expiry, err := expiryOf(now, retention)
	if err != nil {
		return fmt.Errorf("pgstore: %s %q: %w", op, key, err)
	}
	if token > math.MaxInt64 {
		return fmt.Errorf("pgstore: %s %q with token %d: %w", op, key, token, idempotency.ErrFenced)
	}
	if value == nil {
		value = []byte{}
	}
	tag, err := db.Exec(ctx, s.completeSQL, key, int64(token), value, expiry, floorMicro(now))
	if err != nil {
		return fmt.Errorf("pgstore: %s %q: %w", op, key, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("pgstore: %s %q with token %d: %w", op, key, token, idempotency.ErrFenced)
	}
	return nil
}

// Release implements idempotency.Store.Release with one DELETE. It returns an
// error wrapping idempotency.ErrFenced when token is not the live in-flight
// claim's, and otherwise only errors of the database.
func (s *Store) Release(ctx context.Context, key string, token uint64) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pgstore: release %q: %w", key, err)
	}
	if token > math.MaxInt64 {
		return fmt.Errorf("pgstore: release %q with token %d: %w", key, token, idempotency.ErrFenced)
	}
	tag, err := s.pool.Exec(ctx, s.releaseSQL, key, int64(token), floorMicro(s.clock.Now()))
	if err != nil {
		return fmt.Errorf("pgstore: release %q: %w", key, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("pgstore: release %q with token %d: %w", key, token, idempotency.ErrFenced)
	}
	return nil
}

// Get implements idempotency.Store.Get with one query. It returns an error
// wrapping idempotency.ErrNotFound when key has no record, or its lease or
// retention has passed by the Store's Clock, and otherwise only errors of
// the database.
func (s *Store) Get(ctx context.Context, key string) (idempotency.Record, error) {
	if err := ctx.Err(); err != nil {
		return idempotency.Record{}, fmt.Errorf("pgstore: get %q: %w", key, err)
	}
	var (
		completed     bool
		token         int64
		fp, value     []byte
		leaseExp, exp time.Time
	)
	err := s.pool.QueryRow(ctx, s.getSQL, key, floorMicro(s.clock.Now())).
		Scan(&fp, &token, &completed, &value, &leaseExp, &exp)
	if errors.Is(err, pgx.ErrNoRows) {
		return idempotency.Record{}, fmt.Errorf("pgstore: get %q: %w", key, idempotency.ErrNotFound)
	}
	if err != nil {
		return idempotency.Record{}, fmt.Errorf("pgstore: get %q: %w", key, err)
	}
	return makeRecord(key, fp, token, completed, value, leaseExp, exp), nil
}

// Reap deletes the records whose lease or retention has passed by the
// Store's Clock, in DELETEs of at most Config.ReapBatch rows, and returns how
// many it deleted. Rows locked by a running claim or business transaction are
// left for the next pass. Records need no reaping to be correct, since every
// operation checks expiry itself; the reaper only keeps the table small. It
// returns the database's error, wrapped, with the count deleted so far.
func (s *Store) Reap(ctx context.Context) (int64, error) {
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, s.reapSQL, floorMicro(s.clock.Now()), s.batch)
		if err != nil {
			return total, fmt.Errorf("pgstore: reap %s: %w", s.table, err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(s.batch) {
			return total, nil
		}
	}
}

// RunReaper calls Reap at once and then every Config.ReapInterval by the
// Store's Clock, until ctx ends; then it returns ctx.Err(). A failed pass is
// reported to Config.Observer and retried at the next interval. It runs on
// the caller's goroutine: start it with go and cancel ctx to stop it.
func (s *Store) RunReaper(ctx context.Context) error {
	for {
		start := s.clock.Now()
		if _, err := s.Reap(ctx); err != nil && ctx.Err() == nil && s.obs != nil {
			s.obs.Observe(bulwark.Event{
				Kind:      bulwark.EventStoreError,
				Component: bulwark.ComponentIdempotency,
				Name:      s.name,
				Err:       err,
				Latency:   s.clock.Since(start),
				Reason:    "reap",
			})
		}
		if err := bulwark.Sleep(ctx, s.clock, s.interval); err != nil {
			return err
		}
	}
}

func makeRecord(key string, fp []byte, token int64, completed bool, value []byte, leaseExp, exp time.Time) idempotency.Record {
	rec := idempotency.Record{Key: key, Token: uint64(token), Completed: completed, LeaseExpiry: leaseExp.UTC()}
	if len(fp) > 0 {
		rec.Fingerprint = fp
	}
	if completed {
		rec.ExpiresAt = exp.UTC()
		if len(value) > 0 {
			rec.Value = value
		}
	}
	return rec
}

// expiryOf returns now+d rounded up to the microsecond, PostgreSQL's
// precision, so that a lease never ends early.
func expiryOf(now time.Time, d time.Duration) (time.Time, error) {
	at := now.Add(d)
	if at.Before(now) || at.Year() > 200000 {
		return time.Time{}, fmt.Errorf("time %v plus %v is out of range", now, d)
	}
	if t := at.Truncate(time.Microsecond); t.Before(at) {
		return t.Add(time.Microsecond), nil
	}
	return at, nil
}

func floorMicro(t time.Time) time.Time { return t.Truncate(time.Microsecond) }
