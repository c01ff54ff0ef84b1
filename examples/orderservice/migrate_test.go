package orderservice

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// sqlLog records the statements a pool runs.
type sqlLog struct {
	mu  sync.Mutex // guards sql
	sql []string
}

func (l *sqlLog) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	l.mu.Lock()
	l.sql = append(l.sql, d.SQL)
	l.mu.Unlock()
	return ctx
}

func (l *sqlLog) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (l *sqlLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.sql
	l.sql = nil
	return out
}

// tracedPool is testPool with every statement recorded in the returned log.
func tracedPool(t *testing.T) (*pgxpool.Pool, *sqlLog) {
	t.Helper()
	testPool(t) // skips without a server
	cfg, err := pgxpool.ParseConfig(os.Getenv("BULWARK_POSTGRES_URL"))
	if err != nil {
		t.Fatal(err)
	}
	log := &sqlLog{}
	cfg.ConnConfig.Tracer = log
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, log
}

func isDDL(sql string) bool {
	s := strings.ToUpper(strings.TrimSpace(sql))
	for _, verb := range []string{"CREATE", "ALTER", "DROP", "INSERT", "LOCK", "SELECT PG_ADVISORY"} {
		if strings.HasPrefix(s, verb) || strings.Contains(s, "\n"+verb) || strings.Contains(s, ";"+verb) {
			return true
		}
	}
	return false
}

func TestMigrateRunsNoDDLWhenUpToDate(t *testing.T) {
	pool, log := tracedPool(t)
	table := fmt.Sprintf("orders_mig_%d", time.Now().UnixNano())
	r := newPostgresRepo(t, pool, table)
	if first := log.take(); len(first) < 3 {
		t.Fatalf("the first Migrate ran %d statements, want the schema's", len(first))
	}
	for i := 0; i < 3; i++ {
		if err := r.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		stmts := log.take()
		if len(stmts) != 1 {
			t.Errorf("Migrate of an up-to-date schema ran %d statements %q, want only the version read", len(stmts), stmts)
		}
		for _, s := range stmts {
			if isDDL(s) {
				t.Errorf("Migrate of an up-to-date schema ran %q", s)
			}
		}
	}
}

func TestMigrateConcurrentSafe(t *testing.T) {
	pool := testPool(t)
	table := fmt.Sprintf("orders_migc_%d", time.Now().UnixNano())
	t.Cleanup(func() { dropOrders(pool, table) })
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := NewPostgresRepository(pool, table)
			if err != nil {
				t.Error(err)
				return
			}
			if err := r.Migrate(context.Background()); err != nil {
				t.Errorf("concurrent Migrate = %v", err)
			}
		}()
	}
	wg.Wait()
	var versions, latest int
	err := pool.QueryRow(context.Background(), "SELECT count(*), max(version) FROM "+table+"_migrations").Scan(&versions, &latest)
	if err != nil || versions != len(migrations) || latest != len(migrations) {
		t.Errorf("after 8 concurrent Migrates: %d versions recorded, latest %d (%v); want each of the %d once", versions, latest, err, len(migrations))
	}
}

// TestMigrateAdoptsUnversionedSchema starts from the table that releases
// before versioned migrations created, with an order in it.
func TestMigrateAdoptsUnversionedSchema(t *testing.T) {
	pool := testPool(t)
	ctx := context.Background()
	table := fmt.Sprintf("orders_old_%d", time.Now().UnixNano())
	t.Cleanup(func() { dropOrders(pool, table) })
	old := strings.NewReplacer("$TABLE", table, "$SEQIDX", table+"_seq_idx", "$SEQ", table+"_seq").Replace(migrations[0])
	if _, err := pool.Exec(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "INSERT INTO "+table+` (id, customer, partition, version, body)
		VALUES ('1-old', 'fay', 1, 1, '{"id":"1-old","customer":"fay","state":"created","version":1}')`); err != nil {
		t.Fatal(err)
	}
	r, err := NewPostgresRepository(pool, table)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Migrate(ctx); err != nil {
		t.Fatalf("Migrate over the unversioned schema = %v", err)
	}
	if o, err := r.Get(ctx, "1-old"); err != nil || o.Customer != "fay" {
		t.Errorf("Get(the old order) = %+v, %v", o, err)
	}
	if err := r.Create(ctx, keyedOrder("2-new", "acme", "k")); err != nil {
		t.Fatal(err)
	}
	var used *KeyUsedError
	if err := r.Create(ctx, keyedOrder("3-new", "acme", "k")); !errors.As(err, &used) {
		t.Errorf("Create(a used key) after adopting = %v, want a KeyUsedError", err)
	}
}

func TestMigrateLeavesANewerSchemaAlone(t *testing.T) {
	pool, log := tracedPool(t)
	table := fmt.Sprintf("orders_new_%d", time.Now().UnixNano())
	r := newPostgresRepo(t, pool, table)
	if _, err := pool.Exec(context.Background(), "INSERT INTO "+table+"_migrations (version) VALUES (99)"); err != nil {
		t.Fatal(err)
	}
	log.take()
	if err := r.Migrate(context.Background()); err != nil {
		t.Errorf("Migrate with the schema at version 99 = %v, want nil", err)
	}
	if stmts := log.take(); len(stmts) != 1 {
		t.Errorf("Migrate with the schema at version 99 ran %q, want only the version read", stmts)
	}
}
