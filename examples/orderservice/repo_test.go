package orderservice

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/jackc/pgx/v5/pgxpool"
)

// repoUnderTest runs fn against the memory repository and, when a server is
// configured, against PostgreSQL.
func repoUnderTest(t *testing.T, fn func(t *testing.T, r Repository)) {
	t.Run("memory", func(t *testing.T) {
		r, err := NewMemoryRepository(4)
		if err != nil {
			t.Fatal(err)
		}
		fn(t, r)
	})
	t.Run("postgres", func(t *testing.T) {
		pool := testPool(t)
		table := fmt.Sprintf("orders_test_%d", time.Now().UnixNano())
		fn(t, newPostgresRepo(t, pool, table))
	})
}

// newPostgresRepo returns a migrated repository in a new table, which the
// test's cleanup drops.
func newPostgresRepo(t *testing.T, pool *pgxpool.Pool, table string) *PostgresRepository {
	t.Helper()
	r, err := NewPostgresRepository(pool, table)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropOrders(pool, table) })
	if err := r.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

func dropOrders(pool *pgxpool.Pool, table string) {
	_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+table+", "+table+"_migrations; DROP SEQUENCE IF EXISTS "+table+"_seq")
}

// testPool connects to BULWARK_POSTGRES_URL, skipping when it is unset
// outside CI.
func testPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	url := os.Getenv("BULWARK_POSTGRES_URL")
	if url == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("BULWARK_POSTGRES_URL is not set, and CI needs the PostgreSQL tests")
		}
		t.Skip("BULWARK_POSTGRES_URL is not set: skipping the PostgreSQL tests")
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 32 // tests hold locks and wait on several connections at once
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func newTestOrder(id, customer string) Order {
	return Order{ID: id, Customer: customer, Items: []Item{{SKU: "a", Quantity: 1, PriceCents: 100}},
		AmountCents: 100, Currency: "EUR", State: Created, Version: 1}
}

func TestRepositoryCompareAndSet(t *testing.T) {
	repoUnderTest(t, func(t *testing.T, r Repository) {
		ctx := context.Background()
		o := newTestOrder("1-abc", "alice")
		if err := r.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		if err := r.Create(ctx, o); !errors.Is(err, ErrDuplicate) {
			t.Errorf("Create(existing) = %v, want ErrDuplicate", err)
		}
		paid := o
		paid.State, paid.Version = Paid, 2
		if err := r.Update(ctx, paid); err != nil {
			t.Fatalf("Update(v2) = %v", err)
		}
		stale := o
		stale.State, stale.Version = Cancelled, 2
		if err := r.Update(ctx, stale); !errors.Is(err, ErrVersionConflict) {
			t.Errorf("Update(stale v2) = %v, want ErrVersionConflict", err)
		}
		got, err := r.Get(ctx, o.ID)
		if err != nil || got.State != Paid || got.Version != 2 {
			t.Errorf("Get = %+v, %v; want paid v2", got, err)
		}
		if _, err := r.Get(ctx, "1-missing"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(missing) = %v, want ErrNotFound", err)
		}
		if err := r.Update(ctx, newTestOrder("2-missing", "bob")); !errors.Is(err, ErrNotFound) {
			t.Errorf("Update(missing) = %v, want ErrNotFound", err)
		}
	})
}

func TestRepositoryCompareAndSetConcurrentSafe(t *testing.T) {
	repoUnderTest(t, func(t *testing.T, r Repository) {
		ctx := context.Background()
		o := newTestOrder("0-race", "carol")
		if err := r.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				next := o
				next.Version = 2
				next.State = Paid
				if i%2 == 0 {
					next.State = Cancelled
				}
				switch err := r.Update(ctx, next); {
				case err == nil:
					wins.Add(1)
				case !errors.Is(err, ErrVersionConflict):
					t.Errorf("Update = %v", err)
				}
			}()
		}
		wg.Wait()
		if n := wins.Load(); n != 1 {
			t.Errorf("%d concurrent updates of version 1 won, want exactly 1", n)
		}
	})
}

func TestReadModelLagsAndCatchesUp(t *testing.T) {
	repoUnderTest(t, func(t *testing.T, r Repository) {
		ctx := context.Background()
		clk := bulwarktest.NewClock(time.Time{})
		m := NewReadModel(r, clk)
		for i := 0; i < 3; i++ {
			if err := r.Create(ctx, newTestOrder(fmt.Sprintf("%d-o%d", i%4, i), "dave")); err != nil {
				t.Fatal(err)
			}
		}
		if l := m.List("", "dave"); len(l.Orders) != 0 {
			t.Fatalf("List before Refresh = %d orders, want 0 (the read model lags)", len(l.Orders))
		}
		if err := m.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		clk.Advance(1500 * time.Millisecond)
		l := m.List("", "dave")
		if len(l.Orders) != 3 || l.AsOf == 0 || l.AgeMillis != 1500 {
			t.Errorf("List after Refresh = %d orders, as of %d, age %d ms; want 3, > 0, 1500", len(l.Orders), l.AsOf, l.AgeMillis)
		}
		o, _ := r.Get(ctx, "1-o1")
		o.Version, o.State = 2, Paid
		if err := r.Update(ctx, o); err != nil {
			t.Fatal(err)
		}
		if err := m.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		for _, got := range m.List("", "dave").Orders {
			if got.ID == "1-o1" && got.State != Paid {
				t.Errorf("read model has %s as %s after refresh, want paid", got.ID, got.State)
			}
		}
	})
}

func keyedOrder(id, tenant, key string) Order {
	o := newTestOrder(id, "erin")
	o.Tenant, o.IdempotencyKey = tenant, key
	return o
}

func TestRepositoryTenantKeyIsUnique(t *testing.T) {
	repoUnderTest(t, func(t *testing.T, r Repository) {
		ctx := context.Background()
		first := keyedOrder("1-first", "acme", "k1")
		if err := r.Create(ctx, first); err != nil {
			t.Fatal(err)
		}
		var used *KeyUsedError
		if err := r.Create(ctx, keyedOrder("2-second", "acme", "k1")); !errors.As(err, &used) || used.Order.ID != first.ID {
			t.Fatalf("Create(same tenant, same key) = %v, want a KeyUsedError holding %s", err, first.ID)
		}
		if _, err := r.Get(ctx, "2-second"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(the refused order) = %v, want ErrNotFound: nothing is stored", err)
		}
		if err := r.Create(ctx, keyedOrder("3-other-tenant", "globex", "k1")); err != nil {
			t.Errorf("Create(another tenant, same key) = %v, want nil", err)
		}
		if err := r.Create(ctx, keyedOrder("1-first", "acme", "k2")); !errors.Is(err, ErrDuplicate) {
			t.Errorf("Create(existing id, new key) = %v, want ErrDuplicate", err)
		}
		for _, id := range []string{"0-nokey-1", "0-nokey-2"} {
			if err := r.Create(ctx, keyedOrder(id, "acme", "")); err != nil {
				t.Errorf("Create(%s without a key) = %v, want nil: orders without a key never conflict", id, err)
			}
		}
		if n, _ := r.Count(ctx); n != 4 {
			t.Errorf("Count = %d, want 4", n)
		}
	})
}

func TestRepositoryTenantKeyConcurrentSafe(t *testing.T) {
	repoUnderTest(t, func(t *testing.T, r Repository) {
		ctx := context.Background()
		const n = 16
		var wg sync.WaitGroup
		winners := make(chan string, n)
		recovered := make(chan string, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("%d-run%d", i%4, i)
				var used *KeyUsedError
				switch err := r.Create(ctx, keyedOrder(id, "acme", "storm")); {
				case err == nil:
					winners <- id
				case errors.As(err, &used):
					recovered <- used.Order.ID
				default:
					t.Errorf("Create(%s) = %v", id, err)
				}
			}()
		}
		wg.Wait()
		close(winners)
		close(recovered)
		var won []string
		for id := range winners {
			won = append(won, id)
		}
		if len(won) != 1 {
			t.Fatalf("%d concurrent creates with one key stored %v, want exactly one", n, won)
		}
		for id := range recovered {
			if id != won[0] {
				t.Errorf("a refused create was handed order %s, want the stored %s", id, won[0])
			}
		}
	})
}

func TestRepositorySummary(t *testing.T) {
	repoUnderTest(t, func(t *testing.T, r Repository) {
		ctx := context.Background()
		add := func(id, tenant, currency string, state State, amount int64) {
			t.Helper()
			o := keyedOrder(id, tenant, "")
			o.Currency, o.AmountCents = currency, amount
			if err := r.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
			if state != Created {
				o.State, o.Version = state, 2
				if err := r.Update(ctx, o); err != nil {
					t.Fatal(err)
				}
			}
		}
		add("0-a", "acme", "EUR", Created, 100)
		add("1-b", "acme", "EUR", Created, 250)
		add("2-c", "acme", "USD", Created, 7)
		add("3-d", "acme", "EUR", Paid, 1000)
		add("0-e", "globex", "EUR", Created, 99999) // another tenant's
		got, err := r.Summary(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		want := []SummaryRow{
			{State: Created, Currency: "EUR", Orders: 2, AmountCents: 350},
			{State: Created, Currency: "USD", Orders: 1, AmountCents: 7},
			{State: Paid, Currency: "EUR", Orders: 1, AmountCents: 1000},
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("Summary(acme) = %v, want %v", got, want)
		}
		if got, err := r.Summary(ctx, "initech"); err != nil || len(got) != 0 {
			t.Errorf("Summary(a tenant without orders) = %v, %v; want no rows", got, err)
		}
	})
}
