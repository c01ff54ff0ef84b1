package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// recorder is a pgx.QueryTracer that keeps the statements sent.
type recorder struct {
	mu  sync.Mutex
	sql []string
}

func (r *recorder) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	r.mu.Lock()
	r.sql = append(r.sql, d.SQL)
	r.mu.Unlock()
	return ctx
}

func (r *recorder) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (r *recorder) statements() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.sql...)
}

// isDDL reports whether a statement changes the schema or takes a lock
// beyond those of a plain read.
func isDDL(sql string) bool {
	s := strings.ToUpper(strings.TrimSpace(sql))
	for _, p := range []string{"CREATE", "ALTER", "DROP", "LOCK", "SET", "INSERT", "UPDATE", "DELETE"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return strings.Contains(s, "ADVISORY")
}

// TestMigrateUpToDate: an instance that starts against an up-to-date schema
// runs no DDL, takes no advisory lock, and needs no lock on the table or its
// sequence: it finishes while another transaction holds the table in ACCESS
// EXCLUSIVE mode, which conflicts with every lock, and the sequence as its
// ALTER would.
func TestMigrateUpToDate(t *testing.T) {
	ctx := context.Background()
	pool := serverPool(t)
	schema := testSchema(t, pool)
	storeIn(t, pool, schema, nil) // the first instance migrates

	rec := &recorder{}
	traced := serverPool(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = rec })
	s, err := New(Config{Pool: traced, Table: schema + ".records"})
	require.NoError(t, err)

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, "LOCK TABLE "+s.names.table+" IN ACCESS EXCLUSIVE MODE")
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "ALTER SEQUENCE "+s.names.seq+" INCREMENT BY 1") // locks the sequence as its DDL would
	require.NoError(t, err)

	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, s.Migrate(mctx), "Migrate against an up-to-date schema, with the table locked")
	stmts := rec.statements()
	for _, sql := range stmts {
		if isDDL(sql) {
			t.Errorf("Migrate of an up-to-date schema sent %q, want reads only", sql)
		}
	}
	if len(stmts) == 0 || len(stmts) > 2 {
		t.Errorf("Migrate of an up-to-date schema sent %d statements (%q), want 1 or 2 reads", len(stmts), stmts)
	}
}

// TestMigrateVersions: the first Migrate creates the schema and records
// version 1; a table made by an earlier pgstore, without a version table, is
// adopted with no DDL on it, its rows kept.
func TestMigrateVersions(t *testing.T) {
	ctx := context.Background()
	pool := serverPool(t)

	t.Run("fresh", func(t *testing.T) {
		schema := testSchema(t, pool)
		rec := &recorder{}
		traced := serverPool(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = rec })
		s, err := New(Config{Pool: traced, Table: schema + ".records"})
		require.NoError(t, err)
		require.NoError(t, s.Migrate(ctx))
		var v int
		require.NoError(t, pool.QueryRow(ctx, "SELECT max(version) FROM "+s.names.version).Scan(&v))
		if v != SchemaVersion {
			t.Errorf("recorded schema version = %d, want %d", v, SchemaVersion)
		}
		var ddl int
		for _, sql := range rec.statements() {
			if strings.HasPrefix(strings.TrimSpace(sql), "CREATE") {
				ddl++
			}
		}
		if ddl != 4 { // version table, sequence, table, index
			t.Errorf("first Migrate ran %d CREATE statements, want 4", ddl)
		}
		c, err := s.Claim(ctx, "k", fp, lease)
		require.NoError(t, err)
		require.True(t, c.Won, "Claim after Migrate")
	})

	t.Run("legacy table", func(t *testing.T) {
		schema := testSchema(t, pool)
		s, err := New(Config{Pool: pool, Table: schema + ".records"})
		require.NoError(t, err)
		// What Migrate created before schema versions.
		_, err = pool.Exec(ctx, `
CREATE SEQUENCE `+s.names.seq+`;
CREATE TABLE `+s.names.table+` (
	key text PRIMARY KEY, fingerprint bytea NOT NULL, token bigint NOT NULL,
	completed boolean NOT NULL DEFAULT false, taken_over boolean NOT NULL DEFAULT false,
	value bytea, lease_expiry timestamptz NOT NULL, expires_at timestamptz NOT NULL);
ALTER SEQUENCE `+s.names.seq+` OWNED BY `+s.names.column+`;
CREATE INDEX records_expires_idx ON `+s.names.table+` (expires_at);`)
		require.NoError(t, err)
		c, err := s.Claim(ctx, "old", fp, lease)
		require.NoError(t, err)
		require.NoError(t, s.Complete(ctx, "old", c.Token, []byte("kept"), retention))

		rec := &recorder{}
		traced := serverPool(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = rec })
		s2, err := New(Config{Pool: traced, Table: schema + ".records"})
		require.NoError(t, err)
		require.NoError(t, s2.Migrate(ctx))
		for _, sql := range rec.statements() {
			if u := strings.ToUpper(strings.TrimSpace(sql)); (strings.HasPrefix(u, "CREATE") || strings.HasPrefix(u, "ALTER")) &&
				!strings.Contains(sql, s.names.version) {
				t.Errorf("Migrate of a legacy table sent %q, want DDL on the version table only", sql)
			}
		}
		got, err := s2.Get(ctx, "old")
		if err != nil || string(got.Value) != "kept" {
			t.Errorf("Get(old) after adopting the legacy table = %+v, %v; want its record kept", got, err)
		}
		var v int
		require.NoError(t, pool.QueryRow(ctx, "SELECT max(version) FROM "+s.names.version).Scan(&v))
		require.Equal(t, SchemaVersion, v, "recorded schema version")
	})
}

// TestMigrateUnderLoad starts and stops 20 instances, each with its own pool
// running Migrate, while 8 workers claim, complete and replay keys without
// pause: no claim fails, and no start fails, with a deadlock (40P01) or
// anything else.
func TestMigrateUnderLoad(t *testing.T) {
	ctx := context.Background()
	pool := serverPool(t, func(c *pgxpool.Config) { c.MaxConns = 12 })
	schema := testSchema(t, pool)
	s := storeIn(t, pool, schema, nil)

	stop := make(chan struct{})
	var (
		wg       sync.WaitGroup
		requests atomic.Int64
		mu       sync.Mutex
		failures []error
	)
	fail := func(err error) {
		mu.Lock()
		failures = append(failures, err)
		mu.Unlock()
	}
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("w%d-%d", w, i%50) // replays after the first round
				c, err := s.Claim(ctx, key, fp, lease)
				if err == nil && c.Won {
					err = s.Complete(ctx, key, c.Token, []byte("v"), retention)
				}
				if err != nil {
					fail(err)
					return
				}
				requests.Add(1)
			}
		})
	}
	for i := range 20 {
		p := serverPool(t, func(c *pgxpool.Config) { c.MaxConns = 2 })
		inst, err := New(Config{Pool: p, Table: schema + ".records"})
		require.NoError(t, err)
		if err := inst.Migrate(ctx); err != nil {
			fail(fmt.Errorf("start %d: %w", i, err))
		}
		p.Close()
	}
	close(stop)
	wg.Wait()
	for _, err := range failures {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "40P01" {
			t.Errorf("deadlock: %v", err)
		} else {
			t.Errorf("failure under load: %v", err)
		}
	}
	t.Logf("%d requests during 20 starts", requests.Load())
}
