package pgstore

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

var _ idempotency.Store = (*Store)(nil)

// ErrInvalidConfig is wrapped by every error New returns for a bad Config.
// Callers test with errors.Is.
var ErrInvalidConfig = errors.New("pgstore: invalid config")

// Errors of Start.
var (
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("pgstore: already started")
	// ErrClosed is returned by Start after Close.
	ErrClosed = errors.New("pgstore: closed")
)

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

	// TestClock, if not nil, replaces the server's clock: the statements
	// decide expiry against its time, sent with each call, instead of
	// PostgreSQL's now() and clock_timestamp(), and the reaper waits on it.
	// It is for tests that move time by hand; leave it nil in production,
	// where a client's clock must never decide a lease.
	TestClock bulwark.Clock

	// ReapInterval is the time between two passes of the reaper that Start
	// starts, on the wall clock (or TestClock). If zero, one minute;
	// negative is an error.
	ReapInterval time.Duration

	// ReapBatch is the most records one DELETE of the reaper removes, so
	// that no pass holds many row locks for long. If zero, 1000; negative
	// is an error.
	ReapBatch int

	// Observer receives an EventStoreError, with Reason "reap", for each
	// failed pass of the reaper. If nil, no events.
	Observer bulwark.Observer

	// Name is the Event.Name of the Store's events.
	Name string
}

// Store is an idempotency.Store kept in a PostgreSQL table. Each of Claim,
// Extend, Complete, Release and Get is one statement run in its own implicit
// transaction, never inside the caller's business transaction (where a claim
// would make every duplicate wait behind the whole request); CompleteTx
// completes a key inside the caller's transaction:
//
//   - Claim: INSERT … ON CONFLICT DO NOTHING, a conditional UPDATE that takes
//     over an expired record, or a read of the live record (see Claim).
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
// shorten another's lease. Config.TestClock replaces the server's clock, for
// tests only. (expires_at and the rest of the schema: see Migrate.)
//
// A Store is safe for concurrent use by multiple goroutines, and any number
// of Stores in any number of processes may share one table. New starts no
// background work: Start starts the optional reaper and Close stops it.
type Store struct {
	pool     *pgxpool.Pool
	test     bulwark.Clock // Config.TestClock; nil in production
	clock    bulwark.Clock // of the reaper
	interval time.Duration
	batch    int
	obs      bulwark.Observer
	name     string
	table    string // the table, quoted
	lockID   int64  // advisory lock of Migrate

	mu      sync.Mutex
	started bool               // guarded by mu
	closed  bool               // guarded by mu
	cancel  context.CancelFunc // guarded by mu; stops the reaper
	reaped  chan struct{}      // guarded by mu; closed when the reaper returns

	names                                                         schemaNames
	claimSQL, extendSQL, completeSQL, releaseSQL, getSQL, reapSQL string
}

// schemaNames are the quoted names of the objects of a Store's schema, and of
// the table of its schema versions, and their bare names.
type schemaNames struct {
	table, seq, column, version                string // quoted, qualified as Config.Table is
	schema                                     *string
	tableName, seqName, indexName, versionName string // bare
}

// relation names a relation for a lookup in pg_class: its schema, nil for
// the current one, and its bare name.
type relation struct {
	schema *string
	name   string
}

func (n schemaNames) rel(name string) relation { return relation{n.schema, name} }

// New returns a Store for cfg. It does no I/O: call Migrate, or apply the
// schema given in Migrate's documentation, before the first use. It returns an
// error wrapping ErrInvalidConfig if cfg.Pool is nil, cfg.Table is not a valid name, or
// cfg.ReapInterval or cfg.ReapBatch is negative.
func New(cfg Config) (*Store, error) {
	if cfg.Pool == nil {
		return nil, fmt.Errorf("%w: Config.Pool is nil", ErrInvalidConfig)
	}
	if cfg.ReapInterval < 0 {
		return nil, fmt.Errorf("%w: Config.ReapInterval is %v, want >= 0", ErrInvalidConfig, cfg.ReapInterval)
	}
	if cfg.ReapBatch < 0 {
		return nil, fmt.Errorf("%w: Config.ReapBatch is %d, want >= 0", ErrInvalidConfig, cfg.ReapBatch)
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
		test:     cfg.TestClock,
		clock:    clockOrWall(cfg.TestClock),
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
	inSchema := func(name string) string {
		return append(append(pgx.Identifier(nil), ident[:len(ident)-1]...), name).Sanitize()
	}
	s.table = ident.Sanitize()
	s.names = schemaNames{
		table:       s.table,
		seq:         inSchema(base + "_token_seq"),
		column:      append(append(pgx.Identifier(nil), ident...), "token").Sanitize(),
		version:     inSchema(base + "_version"),
		tableName:   base,
		seqName:     base + "_token_seq",
		indexName:   base + "_expires_idx",
		versionName: base + "_version",
	}
	if len(ident) == 2 {
		s.names.schema = &ident[0]
	}
	h := fnv.New64a()
	h.Write([]byte("bulwark/pgstore " + s.table))
	s.lockID = int64(h.Sum64())
	r := strings.NewReplacer("$TABLE", s.table, "$SEQ", s.names.seq)
	s.claimSQL = r.Replace(claimSQL)
	s.extendSQL = r.Replace(extendSQL)
	s.completeSQL = r.Replace(completeSQL)
	s.releaseSQL = r.Replace(releaseSQL)
	s.getSQL = r.Replace(getSQL)
	s.reapSQL = r.Replace(reapSQL)
	return s, nil
}

func parseTable(name string) (pgx.Identifier, error) {
	parts := strings.Split(name, ".")
	if len(parts) > 2 {
		return nil, fmt.Errorf("%w: Config.Table %q has more than a schema and a table", ErrInvalidConfig, name)
	}
	for _, p := range parts {
		if !validName(p) {
			return nil, fmt.Errorf("%w: Config.Table %q: %q is not a letter or underscore followed by letters, digits and underscores", ErrInvalidConfig, name, p)
		}
	}
	if base := parts[len(parts)-1]; len(base) > 50 {
		return nil, fmt.Errorf("%w: Config.Table %q: table name longer than 50 bytes", ErrInvalidConfig, name)
	}
	if len(parts[0]) > 63 {
		return nil, fmt.Errorf("%w: Config.Table %q: schema name longer than 63 bytes", ErrInvalidConfig, name)
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

// Every statement takes the time as a parameter: NULL in production, where
// the server's clock decides, or the time of Config.TestClock. Durations are
// whole microseconds, PostgreSQL's precision, rounded up so that a lease
// never ends early. A statement in its own implicit transaction reads now(),
// the start of that transaction, which is after its client sent it; one that
// may run in the caller's longer transaction (a completion) reads
// clock_timestamp().

// claimSQL claims a key in one statement of three parts, all on the
// statement's snapshot:
//   - INSERT … ON CONFLICT DO NOTHING claims a free key. On a conflict it
//     neither locks nor waits for the row, so a replay writes nothing.
//   - A conditional UPDATE takes over a record whose expires_at has passed
//     (the lease of an in-flight record, the retention of a completed one).
//     If the row changed since the snapshot, PostgreSQL re-checks the
//     condition on the newest version, so only one takeover wins.
//   - Otherwise the live record is read and returned, value included.
//
// The read sees the snapshot: a row inserted since is missing, and a row
// taken over since still looks expired, so it returns no row. Claim retries
// the statement then, which only a race brings. $1 key, $2 fingerprint, $3
// now or NULL, $4 lease in µs.
const claimSQL = `
WITH t AS (
	SELECT COALESCE($3::timestamptz, now()) AS now,
		COALESCE($3::timestamptz, now()) + $4::bigint * interval '1 microsecond' AS expiry
), inserted AS (
	INSERT INTO $TABLE (key, fingerprint, token, lease_expiry, expires_at)
	SELECT $1, $2, nextval('$SEQ'), t.expiry, t.expiry FROM t
	ON CONFLICT (key) DO NOTHING
	RETURNING token, taken_over
), taken AS (
	UPDATE $TABLE r SET fingerprint = $2, token = nextval('$SEQ'), completed = false,
		taken_over = NOT r.completed, value = NULL, lease_expiry = t.expiry, expires_at = t.expiry
	FROM t
	WHERE r.key = $1 AND r.expires_at <= t.now AND NOT EXISTS (SELECT FROM inserted)
	RETURNING r.token, r.taken_over
)
SELECT true, token, taken_over, NULL::bytea, false, NULL::bytea, NULL::timestamptz, NULL::timestamptz FROM inserted
UNION ALL
SELECT true, token, taken_over, NULL, false, NULL, NULL, NULL FROM taken
UNION ALL
SELECT false, r.token, r.taken_over, r.fingerprint, r.completed, r.value, r.lease_expiry, r.expires_at
FROM $TABLE r, t WHERE r.key = $1 AND r.expires_at > t.now
	AND NOT EXISTS (SELECT FROM inserted) AND NOT EXISTS (SELECT FROM taken)`

// extendSQL: $1 key, $2 token, $3 lease in µs, $4 now or NULL.
const extendSQL = `
UPDATE $TABLE SET lease_expiry = COALESCE($4::timestamptz, clock_timestamp()) + $3::bigint * interval '1 microsecond',
	expires_at = COALESCE($4::timestamptz, clock_timestamp()) + $3::bigint * interval '1 microsecond'
WHERE key = $1 AND token = $2 AND NOT completed AND lease_expiry > COALESCE($4::timestamptz, clock_timestamp())`

// completeSQL: $1 key, $2 token, $3 value, $4 retention in µs, $5 now or
// NULL.
const completeSQL = `
UPDATE $TABLE SET completed = true, value = $3,
	expires_at = COALESCE($5::timestamptz, clock_timestamp()) + $4::bigint * interval '1 microsecond'
WHERE key = $1 AND token = $2 AND NOT completed AND lease_expiry > COALESCE($5::timestamptz, clock_timestamp())`

// releaseSQL: $1 key, $2 token, $3 now or NULL.
const releaseSQL = `
DELETE FROM $TABLE
WHERE key = $1 AND token = $2 AND NOT completed AND lease_expiry > COALESCE($3::timestamptz, clock_timestamp())`

// getSQL: $1 key, $2 now or NULL.
const getSQL = `
SELECT fingerprint, token, completed, value, lease_expiry, expires_at
FROM $TABLE WHERE key = $1 AND expires_at > COALESCE($2::timestamptz, now())`

// reapSQL deletes up to $2 records expired at $1 (or now() if NULL),
// skipping rows that a claim or a business transaction holds.
const reapSQL = `
WITH doomed AS (
	SELECT key FROM $TABLE WHERE expires_at <= COALESCE($1::timestamptz, now())
	ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
DELETE FROM $TABLE t USING doomed WHERE t.key = doomed.key AND t.expires_at <= COALESCE($1::timestamptz, now())`

// maxClaimTries bounds the statements of one Claim. A second is needed only
// when the key changed between the statement's snapshot and its insert.
const maxClaimTries = 8

// Claim implements idempotency.Store.Claim with one statement of three
// parts: INSERT … ON CONFLICT DO NOTHING claims a free key; a conditional
// UPDATE takes over a record whose expires_at has passed, issuing a new token
// (PostgreSQL re-checks the condition on the newest version of a row changed
// meanwhile, so only one takeover wins); otherwise the live record is read
// and returned, value included, so that a replay is one query and writes
// nothing. The read sees the statement's snapshot: when a concurrent change
// makes it miss the row or see it expired, Claim runs the statement again,
// which only a race costs. The lease runs from the server's now(). It runs
// in its own implicit transaction, never in a caller's. It waits only for a
// transaction that holds the record, which CompleteTx does from its call to
// the commit; it then answers from the state it began with (in flight) or
// the committed one. Claim returns an error if lease is not positive or out
// of range, or if the key changed under each of 8 statements in a row;
// otherwise only errors of the database, such as an unreachable server or
// the end of ctx, wrapped with the operation and key.
func (s *Store) Claim(ctx context.Context, key string, fingerprint []byte, lease time.Duration) (idempotency.Claim, error) {
	if err := ctx.Err(); err != nil {
		return idempotency.Claim{}, fmt.Errorf("pgstore: claim %q: %w", key, err)
	}
	us, err := micros("lease", lease)
	if err != nil {
		return idempotency.Claim{}, fmt.Errorf("pgstore: claim %q: %w", key, err)
	}
	if fingerprint == nil {
		fingerprint = []byte{}
	}
	for range maxClaimTries {
		var (
			won, over, completed bool
			token                int64
			fp, value            []byte
			leaseExp, exp        *time.Time
		)
		err = s.pool.QueryRow(ctx, s.claimSQL, key, fingerprint, s.now(), us).
			Scan(&won, &token, &over, &fp, &completed, &value, &leaseExp, &exp)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			continue // changed since the snapshot: look again
		case err != nil:
			return idempotency.Claim{}, fmt.Errorf("pgstore: claim %q: %w", key, err)
		case won:
			return idempotency.Claim{Won: true, Token: uint64(token), TakenOver: over}, nil
		}
		return idempotency.Claim{Record: makeRecord(key, fp, token, completed, value, *leaseExp, *exp)}, nil
	}
	return idempotency.Claim{}, fmt.Errorf("pgstore: claim %q: the record kept changing under %d attempts", key, maxClaimTries)
}

// Extend implements idempotency.Store.Extend with one UPDATE: the lease then
// ends lease after the server's clock_timestamp(). It returns an error
// wrapping idempotency.ErrFenced when token is not the live in-flight
// claim's (its lease passed, it was taken over, released or completed), an
// error if lease is not positive or out of range, and otherwise only errors
// of the database.
func (s *Store) Extend(ctx context.Context, key string, token uint64, lease time.Duration) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pgstore: extend %q: %w", key, err)
	}
	us, err := micros("lease", lease)
	if err != nil {
		return fmt.Errorf("pgstore: extend %q: %w", key, err)
	}
	if token > math.MaxInt64 {
		return fmt.Errorf("pgstore: extend %q with token %d: %w", key, token, idempotency.ErrFenced)
	}
	tag, err := s.pool.Exec(ctx, s.extendSQL, key, int64(token), us, s.now())
	if err != nil {
		return fmt.Errorf("pgstore: extend %q: %w", key, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("pgstore: extend %q with token %d: %w", key, token, idempotency.ErrFenced)
	}
	return nil
}

// Complete implements idempotency.Store.Complete with one UPDATE. It returns
// an error wrapping idempotency.ErrFenced when token is not the live
// in-flight claim's (its lease passed, it was taken over, released or
// completed), an error if retention is not positive or out of range, and
// otherwise only errors of the database.
func (s *Store) Complete(ctx context.Context, key string, token uint64, value []byte, retention time.Duration) error {
	return s.complete(ctx, s.pool, "complete", key, token, value, retention)
}

// CompleteTx completes the key of lease inside tx, the caller's transaction,
// with value (what idempotency.EncodeResult, EncodeError or EncodeResponse
// return) kept for lease.Retention(). The result is stored if and only if tx
// commits: the business write and the idempotency record commit or roll back
// together, and the fencing token is checked in the same transaction, so a
// run whose lease was taken over cannot commit its business write. Once the
// statement succeeded, CompleteTx calls lease.MarkCompleted, so that the
// idempotency Engine neither completes the key again nor renews its lease.
// If tx rolls back, the claim stays in flight and its owner may still
// Release it (the Engine does when the operation fails).
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
// lease is the one the Engine put in the operation's context
// (idempotency.LeaseFromContext), or idempotency.NewLease for a claim made
// directly on the Store. The UPDATE locks the record until tx ends, so
// duplicates of the key wait for the outcome rather than seeing it half-done:
// a duplicate's claim waits for the commit (or rollback) and is then answered
// as in flight, or with the committed result. Call CompleteTx as the last
// statement before Commit, to keep that wait short. Before CompleteTx the
// business transaction holds nothing of the store, and duplicates get an
// immediate in-flight answer.
//
// CompleteTx returns an error wrapping idempotency.ErrFenced when the lease's
// token is not the live in-flight claim's, in which case the caller must roll
// tx back, since another run owns the key (pgx.BeginFunc does when its
// function returns the error); an error if tx or lease is nil; other errors
// are the database's.
func (s *Store) CompleteTx(ctx context.Context, tx pgx.Tx, lease *idempotency.Lease, value []byte) error {
	if lease == nil {
		return errors.New("pgstore: complete in tx: lease is nil")
	}
	if tx == nil {
		return fmt.Errorf("pgstore: complete %q in tx: tx is nil", lease.Key())
	}
	if err := s.complete(ctx, tx, "complete", lease.Key(), lease.Token(), value, lease.Retention()); err != nil {
		return err
	}
	lease.MarkCompleted()
	return nil
}

type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func (s *Store) complete(ctx context.Context, db execer, op, key string, token uint64, value []byte, retention time.Duration) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pgstore: %s %q: %w", op, key, err)
	}
	us, err := micros("retention", retention)
	if err != nil {
		return fmt.Errorf("pgstore: %s %q: %w", op, key, err)
	}
	if token > math.MaxInt64 {
		return fmt.Errorf("pgstore: %s %q with token %d: %w", op, key, token, idempotency.ErrFenced)
	}
	if value == nil {
		value = []byte{}
	}
	tag, err := db.Exec(ctx, s.completeSQL, key, int64(token), value, us, s.now())
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
	tag, err := s.pool.Exec(ctx, s.releaseSQL, key, int64(token), s.now())
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
// retention has passed by the server's clock, and otherwise only errors of
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
	err := s.pool.QueryRow(ctx, s.getSQL, key, s.now()).
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
// server's clock, in DELETEs of at most Config.ReapBatch rows, and returns
// how many it deleted. Rows locked by a running claim or business
// transaction are left for the next pass. Records need no reaping to be
// correct, since every operation checks expiry itself; the reaper only keeps
// the table small. It returns the database's error, wrapped, with the count
// deleted so far.
func (s *Store) Reap(ctx context.Context) (int64, error) {
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, s.reapSQL, s.now(), s.batch)
		if err != nil {
			return total, fmt.Errorf("pgstore: reap %s: %w", s.table, err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(s.batch) {
			return total, nil
		}
	}
}

// Start starts the reaper on its own goroutine: it calls Reap at once and
// then every Config.ReapInterval, until ctx ends or Close is called. A failed
// pass is reported to Config.Observer and retried at the next interval. The
// reaper only keeps the table small: a Store that is never started works the
// same, since every operation checks expiry itself. Start returns ErrStarted
// if called twice and ErrClosed after Close.
func (s *Store) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.started:
		return ErrStarted
	}
	s.started = true
	ctx, s.cancel = context.WithCancel(ctx)
	s.reaped = make(chan struct{})
	go func(done chan<- struct{}) {
		defer close(done)
		s.reap(ctx)
	}(s.reaped)
	return nil
}

// Close stops the reaper, if started, and waits for it to return. It does
// not close Config.Pool, and the Store's other methods keep working. Close is
// idempotent and always returns nil.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	cancel, reaped := s.cancel, s.reaped
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-reaped
	}
	return nil
}

// reap is the reaper's loop; it returns when ctx ends.
func (s *Store) reap(ctx context.Context) {
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
		if clockSleep(ctx, s.clock, s.interval) != nil {
			return
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

// micros returns d in microseconds, rounded up so that a lease never ends
// early.
func micros(what string, d time.Duration) (int64, error) {
	if d <= 0 {
		return 0, fmt.Errorf("%s is %v, want > 0", what, d)
	}
	us := int64(d / time.Microsecond)
	if d%time.Microsecond != 0 {
		us++
	}
	return us, nil
}

// now returns the time parameter of the statements: nil, so that the server
// decides, or the TestClock's time to the microsecond.
func (s *Store) now() any {
	if s.test == nil {
		return nil
	}
	return s.test.Now().Truncate(time.Microsecond)
}
