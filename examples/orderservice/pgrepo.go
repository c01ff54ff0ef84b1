package orderservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresRepository keeps orders in PostgreSQL, so that several service
// instances share them. Every write takes a number from one sequence, which
// the read model follows; a unique index on (tenant, idempotency_key) keeps
// one order per key. Use NewPostgresRepository, then Migrate.
type PostgresRepository struct {
	pool       *pgxpool.Pool
	table      string // quoted identifier
	seq        string // quoted identifier of the change sequence
	migrations string // quoted identifier of the table of applied migrations
	lockID     int64  // advisory lock that serialises migrations
	steps      []string
}

var _ Repository = (*PostgresRepository)(nil)

// NewPostgresRepository returns a repository of the orders in the table named
// table (e.g. "orders") on pool. It does not touch the database: call Migrate
// before the first use.
func NewPostgresRepository(pool *pgxpool.Pool, table string) (*PostgresRepository, error) {
	if pool == nil {
		return nil, errors.New("orderservice: nil pool")
	}
	if !validTable.MatchString(table) || len(table)+len("_migrations") > 63 {
		return nil, fmt.Errorf("orderservice: table name %q: want 1 to 52 lower-case letters, digits and _, not starting with a digit", table)
	}
	r := &PostgresRepository{
		pool:       pool,
		table:      pgx.Identifier{table}.Sanitize(),
		seq:        pgx.Identifier{table + "_seq"}.Sanitize(),
		migrations: pgx.Identifier{table + "_migrations"}.Sanitize(),
	}
	h := fnv.New64a()
	h.Write([]byte("bulwark orderservice migrations " + table))
	r.lockID = int64(h.Sum64())
	names := strings.NewReplacer(
		"$TABLE", r.table, "$SEQIDX", pgx.Identifier{table + "_seq_idx"}.Sanitize(),
		"$KEYIDX", pgx.Identifier{table + "_tenant_key_idx"}.Sanitize(), "$SEQ", r.seq)
	for _, m := range migrations {
		r.steps = append(r.steps, names.Replace(m))
	}
	return r, nil
}

// migrations are the schema's versions: migrations[i] takes the schema from
// version i to i+1. They are only ever appended to. Version 1 is the schema
// that earlier releases created unversioned, so its statements tolerate
// finding it in place.
var migrations = []string{
	`CREATE SEQUENCE IF NOT EXISTS $SEQ;
CREATE TABLE IF NOT EXISTS $TABLE (
	id         text PRIMARY KEY,
	customer   text NOT NULL,
	partition  int NOT NULL,
	version    bigint NOT NULL,
	seq        bigint NOT NULL DEFAULT nextval('$SEQ'),
	body       jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS $SEQIDX ON $TABLE (seq);`,
	// Orders belong to a tenant, and a (tenant, idempotency key) pair makes
	// at most one order: the second line of defence behind the idempotency
	// store. NULL keys (orders made without one) never conflict.
	`ALTER TABLE $TABLE ADD COLUMN tenant text NOT NULL DEFAULT '', ADD COLUMN idempotency_key text;
CREATE UNIQUE INDEX $KEYIDX ON $TABLE (tenant, idempotency_key);`,
}

// SchemaVersion is the schema version this code needs.
func (r *PostgresRepository) SchemaVersion() int { return len(r.steps) }

// Migrate brings the schema to SchemaVersion. It first reads the version
// recorded in the table <table>_migrations, without locking anything: an
// instance that starts against an up-to-date schema runs no DDL and so never
// waits behind, or blocks, live traffic. Otherwise it applies the missing
// versions in one transaction under an advisory lock, so that instances
// starting together migrate one after the other, and the later ones find the
// work done. A migration waits at most 5 s for a table lock (and is tried
// again, up to three times, if that or a deadlock stops it) so that it
// never queues live traffic behind it for long. A schema newer than this code
// knows is left alone.
//
// Migrate returns the database's error, wrapped.
func (r *PostgresRepository) Migrate(ctx context.Context) error {
	v, err := r.version(ctx, r.pool)
	if err != nil {
		return fmt.Errorf("orderservice: read the schema version of %s: %w", r.table, err)
	}
	if v >= len(r.steps) {
		return nil
	}
	for attempt := 1; ; attempt++ {
		err = pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error { return r.migrate(ctx, tx) })
		var pgErr *pgconn.PgError
		retry := errors.As(err, &pgErr) && (pgErr.Code == "55P03" || pgErr.Code == "40P01") // lock_not_available, deadlock_detected
		if err == nil || !retry || attempt == 3 {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("orderservice: migrate %s: %w", r.table, err)
	}
	return nil
}

func (r *PostgresRepository) migrate(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", r.lockID); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '5s'"); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	version    int PRIMARY KEY,
	applied_at timestamptz NOT NULL DEFAULT now()
)`, r.migrations)); err != nil {
		return err
	}
	v, err := r.version(ctx, tx)
	if err != nil {
		return err
	}
	for ; v < len(r.steps); v++ {
		if _, err := tx.Exec(ctx, r.steps[v]); err != nil {
			return fmt.Errorf("version %d: %w", v+1, err)
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (version) VALUES ($1)`, r.migrations), v+1); err != nil {
			return err
		}
	}
	return nil
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// version returns the highest applied migration, 0 when none is recorded.
func (r *PostgresRepository) version(ctx context.Context, db querier) (int, error) {
	var v int
	err := db.QueryRow(ctx, fmt.Sprintf(`SELECT coalesce(max(version), 0) FROM %s`, r.migrations)).Scan(&v)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table: never migrated
		return 0, nil
	}
	return v, err
}

// Create implements Repository with one INSERT … ON CONFLICT DO NOTHING; only
// when it inserts nothing does a second statement read the order that holds
// the key.
func (r *PostgresRepository) Create(ctx context.Context, o Order) error {
	return r.create(ctx, r.pool, o)
}

// createTx stores o like Create, in a transaction in which complete runs
// last: o is stored if and only if complete succeeds and the transaction
// commits.
func (r *PostgresRepository) createTx(ctx context.Context, o Order, complete func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		if err := r.create(ctx, tx, o); err != nil {
			return err
		}
		return complete(tx)
	})
}

type execQuerier interface {
	querier
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func (r *PostgresRepository) create(ctx context.Context, db execQuerier, o Order) error {
	body, err := json.Marshal(o)
	if err != nil {
		return err
	}
	var key *string
	if o.IdempotencyKey != "" {
		key = &o.IdempotencyKey
	}
	// ON CONFLICT without a target covers the primary key and the (tenant,
	// key) index; on a conflict with a transaction that has not committed,
	// it waits for its outcome. It never aborts the caller's transaction.
	tag, err := db.Exec(ctx, fmt.Sprintf(
		`INSERT INTO %s (id, customer, partition, version, tenant, idempotency_key, body)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`, r.table),
		o.ID, o.Customer, o.Partition, o.Version, o.Tenant, key, body)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	if key != nil {
		err := db.QueryRow(ctx, fmt.Sprintf(`SELECT body FROM %s WHERE tenant = $1 AND idempotency_key = $2`, r.table),
			o.Tenant, *key).Scan(&body)
		switch {
		case err == nil:
			var used Order
			if err := json.Unmarshal(body, &used); err != nil {
				return err
			}
			return &KeyUsedError{Order: used}
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
	}
	return ErrDuplicate
}

// Get implements Repository.
func (r *PostgresRepository) Get(ctx context.Context, id string) (Order, error) {
	var body []byte
	err := r.pool.QueryRow(ctx, fmt.Sprintf(`SELECT body FROM %s WHERE id = $1`, r.table), id).Scan(&body)
	if errors.Is(err, pgx.ErrNoRows) {
		return Order{}, ErrNotFound
	}
	if err != nil {
		return Order{}, err
	}
	var o Order
	return o, json.Unmarshal(body, &o)
}

// Update implements Repository: one conditional UPDATE, the compare-and-set.
func (r *PostgresRepository) Update(ctx context.Context, o Order) error {
	body, err := json.Marshal(o)
	if err != nil {
		return err
	}
	tag, err := r.pool.Exec(ctx, fmt.Sprintf(
		`UPDATE %[1]s SET version = $2, body = $3, seq = nextval('%[2]s') WHERE id = $1 AND version = $4`,
		r.table, r.seq), o.ID, o.Version, body, o.Version-1)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	if _, err := r.Get(ctx, o.ID); err != nil {
		return err
	}
	return ErrVersionConflict
}

// changeWindow is how far behind its cursor the read model re-reads: a write
// that took its sequence number before another but committed after it is
// still seen.
const changeWindow = 256

// Changes implements Repository. It re-reads changeWindow sequence numbers
// behind after, which the read model's idempotent apply absorbs.
func (r *PostgresRepository) Changes(ctx context.Context, after int64, limit int) ([]Order, int64, bool, error) {
	rows, err := r.pool.Query(ctx, fmt.Sprintf(
		`SELECT seq, body FROM %s WHERE seq > $1 ORDER BY seq LIMIT $2`, r.table), max(after-changeWindow, 0), limit)
	if err != nil {
		return nil, after, false, err
	}
	defer rows.Close()
	var out []Order
	last := after
	for rows.Next() {
		var seq int64
		var body []byte
		if err := rows.Scan(&seq, &body); err != nil {
			return nil, after, false, err
		}
		var o Order
		if err := json.Unmarshal(body, &o); err != nil {
			return nil, after, false, err
		}
		out = append(out, o)
		last = max(last, seq)
	}
	if err := rows.Err(); err != nil {
		return nil, after, false, err
	}
	return out, last, len(out) == limit && last > after, nil
}

// Count implements Repository.
func (r *PostgresRepository) Count(ctx context.Context) (int, error) {
	var n int
	err := r.pool.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s`, r.table)).Scan(&n)
	return n, err
}

// Summary implements Repository with one aggregate over the tenant's orders
// (the (tenant, idempotency_key) index finds them).
func (r *PostgresRepository) Summary(ctx context.Context, tenant string) ([]SummaryRow, error) {
	rows, err := r.pool.Query(ctx, fmt.Sprintf(
		`SELECT body->>'state', body->>'currency', count(*), sum((body->>'amount_cents')::bigint)::bigint
		FROM %s WHERE tenant = $1 GROUP BY 1, 2`, r.table), tenant)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []SummaryRow{}
	for rows.Next() {
		var row SummaryRow
		if err := rows.Scan(&row.State, &row.Currency, &row.Orders, &row.AmountCents); err != nil {
			return nil, err
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	sortSummary(out) // in Go's order, whatever the database's collation
	return out, nil
}

var validTable = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
