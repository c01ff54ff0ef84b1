package orderservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresRepository keeps orders in PostgreSQL, so that several service
// instances share them. Every write takes a number from one sequence, which
// the read model follows. Use NewPostgresRepository.
type PostgresRepository struct {
	pool  *pgxpool.Pool
	table string // quoted identifier
	seq   string // quoted identifier of the change sequence
}

var _ Repository = (*PostgresRepository)(nil)

// NewPostgresRepository creates the table (named table, e.g. "orders") and
// its sequence if they do not exist, and returns a repository on pool.
func NewPostgresRepository(ctx context.Context, pool *pgxpool.Pool, table string) (*PostgresRepository, error) {
	if !validTable.MatchString(table) {
		return nil, fmt.Errorf("orderservice: table name %q: want lower-case letters, digits and _", table)
	}
	ident := pgx.Identifier{table}.Sanitize()
	seq := pgx.Identifier{table + "_seq"}.Sanitize()
	_, err := pool.Exec(ctx, fmt.Sprintf(`
CREATE SEQUENCE IF NOT EXISTS %[2]s;
CREATE TABLE IF NOT EXISTS %[1]s (
	id         text PRIMARY KEY,
	customer   text NOT NULL,
	partition  int NOT NULL,
	version    bigint NOT NULL,
	seq        bigint NOT NULL DEFAULT nextval('%[2]s'),
	body       jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS %[3]s ON %[1]s (seq);`, ident, seq, pgx.Identifier{table + "_seq_idx"}.Sanitize()))
	if err != nil {
		return nil, fmt.Errorf("orderservice: create schema: %w", err)
	}
	return &PostgresRepository{pool: pool, table: ident, seq: seq}, nil
}

// Create implements Repository.
func (r *PostgresRepository) Create(ctx context.Context, o Order) error {
	body, err := json.Marshal(o)
	if err != nil {
		return err
	}
	_, err = r.pool.Exec(ctx, fmt.Sprintf(
		`INSERT INTO %s (id, customer, partition, version, body) VALUES ($1, $2, $3, $4, $5)`, r.table),
		o.ID, o.Customer, o.Partition, o.Version, body)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return ErrDuplicate
	}
	return err
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

var validTable = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
