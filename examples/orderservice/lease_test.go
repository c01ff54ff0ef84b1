package orderservice

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/pgstore"
	"github.com/bulwark-go/bulwark/idempotency/redisstore"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// newPGStore returns a migrated pgstore.Store in a new table of pool, which
// the test's cleanup drops.
func newPGStore(t *testing.T, pool *pgxpool.Pool, cfg pgstore.Config) *pgstore.Store {
	t.Helper()
	cfg.Pool = pool
	cfg.Table = fmt.Sprintf("idem_test_%d", time.Now().UnixNano())
	s, err := pgstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropKeys(pool, cfg.Table) })
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// dropKeys drops a pgstore table, with its version table and sequence.
func dropKeys(pool *pgxpool.Pool, table string) {
	_, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+table+", "+table+"_version CASCADE; DROP SEQUENCE IF EXISTS "+table+"_token_seq")
}

func newRedisStore(t *testing.T) idempotency.Store {
	t.Helper()
	addr := os.Getenv("BULWARK_REDIS_ADDR")
	if addr == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("BULWARK_REDIS_ADDR is not set, and CI needs the Redis tests")
		}
		t.Skip("BULWARK_REDIS_ADDR is not set: skipping the Redis variant")
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, PoolSize: 64})
	t.Cleanup(func() { _ = rdb.Close() })
	s, err := redisstore.New(redisstore.Config{Client: rdb, Prefix: fmt.Sprintf("orders-test-%d:", time.Now().UnixNano())})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// lockOrders holds a lock on the orders table that lets reads through and
// makes every INSERT wait, until the returned function is called.
func lockOrders(t *testing.T, pool *pgxpool.Pool, table string) (release func()) {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE "+table+" IN SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	released := false
	release = func() {
		if !released {
			released = true
			_ = tx.Rollback(ctx)
		}
	}
	t.Cleanup(release)
	return release
}

// waitInserts waits until n statements wait for a lock on table.
func waitInserts(t *testing.T, pool *pgxpool.Pool, table string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var waiting int
		err := pool.QueryRow(context.Background(),
			"SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = $1::regclass", table).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		if waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d statements wait for %s after 30 s, want %d", waiting, table, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitInsertsAsync closes the returned channel once n statements wait
// for a lock on table, or the test ends.
func waitInsertsAsync(t *testing.T, pool *pgxpool.Pool, table string, n int) <-chan struct{} {
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var waiting int
			err := pool.QueryRow(ctx,
				"SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = $1::regclass", table).Scan(&waiting)
			if err != nil || waiting >= n {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return done
}

type createResult struct {
	code int
	hdr  http.Header
	body []byte
}

func createAsync(t *testing.T, h *harness, key string, body []byte) <-chan createResult {
	done := make(chan createResult, 1)
	go func() {
		code, hdr, b := call(t, h, http.MethodPost, "/orders", keyA, keyed(key), body)
		done <- createResult{code, hdr, b}
	}()
	return done
}

// TestRunOutlivingItsLeaseKeepsIt is issue 14's check: a create held up for
// 1.5 times its lease (its INSERT waits for a locked table) while its
// instance is alive keeps its key: a duplicate sent after the lease would
// have ended is told 409, never runs, and later gets the first run's order
// replayed; exactly one order is made. Over real HTTP, with the orders in
// PostgreSQL and the keys in memory, Redis or PostgreSQL (completed in the
// order's transaction).
func TestRunOutlivingItsLeaseKeepsIt(t *testing.T) {
	pool := testPool(t)
	const lease = 3 * time.Second
	for _, st := range []struct {
		name  string
		store func(t *testing.T) (idempotency.Store, TxCompleter)
	}{
		{"memory keys", func(t *testing.T) (idempotency.Store, TxCompleter) {
			s, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s, nil
		}},
		{"redis keys", func(t *testing.T) (idempotency.Store, TxCompleter) { return newRedisStore(t), nil }},
		{"postgres keys in the order's transaction", func(t *testing.T) (idempotency.Store, TxCompleter) {
			s := newPGStore(t, pool, pgstore.Config{})
			return s, s
		}},
	} {
		t.Run(st.name, func(t *testing.T) {
			t.Parallel()
			table := fmt.Sprintf("orders_lease_%d", time.Now().UnixNano())
			repo := newPostgresRepo(t, pool, table)
			store, inTx := st.store(t)
			_, pay := newPayments(t)
			h := newHarnessConfig(t, Config{
				Repository: repo, IdempotencyStore: store, CompleteInTx: inTx, Partitions: 4, PaymentURL: pay.URL,
				Lease: lease, IdempotencyWait: -1,
			})

			release := lockOrders(t, pool, table)
			start := time.Now()
			first := createAsync(t, h, "slow", orderBody("ann", 1))
			waitInserts(t, pool, table, 1)
			time.Sleep(time.Until(start.Add(lease * 5 / 4))) // the lease has ended, unless it was renewed
			// Sent asynchronously: if it took the key over (the test is
			// failing), its own INSERT waits for the lock too.
			dup := createAsync(t, h, "slow", orderBody("ann", 1))
			// Before the lock goes, the duplicate must have been answered
			// (409, the test passes) or be stuck behind the lock itself
			// (it took the key over, the test fails): on a loaded machine
			// its request may take longer than the rest of the wait.
			var d createResult
			select {
			case d = <-dup:
			case <-waitInsertsAsync(t, pool, table, 2):
			}
			time.Sleep(time.Until(start.Add(lease * 3 / 2)))
			release()
			if d.code == 0 {
				d = <-dup
			}
			res := <-first
			if res.code != http.StatusCreated {
				t.Fatalf("the slow create = %d %s, want 201", res.code, res.body)
			}
			o := decodeOrder(t, res.body)
			if took := time.Since(start); took < lease*3/2 {
				t.Fatalf("the slow create took %v, want at least 1.5 leases (%v)", took, lease*3/2)
			}
			if d.code != http.StatusConflict || d.hdr.Get("Retry-After") == "" {
				t.Errorf("duplicate at 1.25 leases = %d (replayed %q) %s, want 409 with Retry-After: the live run keeps its key",
					d.code, d.hdr.Get("Idempotent-Replayed"), d.body)
			}
			code, hdr, b := call(t, h, http.MethodPost, "/orders", keyA, keyed("slow"), orderBody("ann", 1))
			if code != http.StatusCreated || hdr.Get("Idempotent-Replayed") != "true" || decodeOrder(t, b).ID != o.ID {
				t.Errorf("duplicate after the run = %d (replayed %q) %s, want order %s replayed", code, hdr.Get("Idempotent-Replayed"), b, o.ID)
			}
			if n, err := repo.Count(context.Background()); n != 1 || err != nil {
				t.Errorf("orders = %d (%v), want 1", n, err)
			}
		})
	}
}

// TestTakenOverRunCannotCommit checks the fencing inside the business
// transaction, where the keys share the orders' database: a run whose claim
// was taken over (its lease ended on the store's clock) cannot commit its
// order, and a failed transaction keeps neither the order nor the key's
// completion.
func TestTakenOverRunCannotCommit(t *testing.T) {
	pool := testPool(t)
	ctx := context.Background()
	clk := bulwarktest.NewClock(time.Now())
	keys := newPGStore(t, pool, pgstore.Config{TestClock: clk})
	repo := newPostgresRepo(t, pool, fmt.Sprintf("orders_fence_%d", time.Now().UnixNano()))

	stale, err := keys.Claim(ctx, "k", []byte("fp"), time.Second)
	if err != nil || !stale.Won {
		t.Fatalf("Claim = %+v, %v", stale, err)
	}
	clk.Advance(2 * time.Second) // past the lease: a duplicate takes the key over
	fresh, err := keys.Claim(ctx, "k", []byte("fp"), time.Second)
	if err != nil || !fresh.Won || !fresh.TakenOver {
		t.Fatalf("Claim after the lease = %+v, %v; want a takeover", fresh, err)
	}
	complete := func(c idempotency.Claim, value string) func(pgx.Tx) error {
		return func(tx pgx.Tx) error {
			return keys.CompleteTx(ctx, tx, idempotency.NewLease("k", c.Token, time.Hour), []byte(value))
		}
	}

	late := keyedOrder("1-late", "acme", "k")
	if err := repo.createTx(ctx, late, complete(stale, "late")); !errors.Is(err, idempotency.ErrFenced) {
		t.Errorf("the stale run's createTx = %v, want ErrFenced", err)
	}
	if _, err := repo.Get(ctx, late.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(the stale run's order) = %v, want ErrNotFound: it must not commit", err)
	}

	// A transaction that fails after the completion keeps neither.
	errLater := errors.New("a later statement failed")
	failing := keyedOrder("2-failed", "acme", "k")
	err = repo.createTx(ctx, failing, func(tx pgx.Tx) error {
		if err := complete(fresh, "failed")(tx); err != nil {
			return err
		}
		return errLater
	})
	if !errors.Is(err, errLater) {
		t.Fatalf("createTx = %v, want the later failure", err)
	}
	if _, err := repo.Get(ctx, failing.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(the rolled-back order) = %v, want ErrNotFound", err)
	}
	if rec, err := keys.Get(ctx, "k"); err != nil || rec.Completed {
		t.Errorf("the key after the rollback = %+v, %v; want still in flight", rec, err)
	}

	won := keyedOrder("3-won", "acme", "k")
	if err := repo.createTx(ctx, won, complete(fresh, "won")); err != nil {
		t.Fatalf("the owner's createTx = %v", err)
	}
	if rec, err := keys.Get(ctx, "k"); err != nil || !rec.Completed || string(rec.Value) != "won" {
		t.Errorf("the key after the owner's commit = %+v, %v; want completed with its value", rec, err)
	}
	if n, _ := repo.Count(ctx); n != 1 {
		t.Errorf("orders = %d, want only the owner's", n)
	}
}

// TestTransactionalCreateStoresItsResponse checks that a create whose key is
// completed in its transaction stores what the middleware would have
// recorded: the duplicate's replay is the first answer, byte for byte.
func TestTransactionalCreateStoresItsResponse(t *testing.T) {
	pool := testPool(t)
	keys := newPGStore(t, pool, pgstore.Config{})
	repo := newPostgresRepo(t, pool, fmt.Sprintf("orders_tx_%d", time.Now().UnixNano()))
	_, pay := newPayments(t)
	h := newHarnessConfig(t, Config{Repository: repo, IdempotencyStore: keys, CompleteInTx: keys, Partitions: 4, PaymentURL: pay.URL})
	code, hdr, first := call(t, h, http.MethodPost, "/orders", keyA, keyed("tx"), orderBody("ann", 1))
	if code != http.StatusCreated {
		t.Fatalf("create = %d %s", code, first)
	}
	code, again, replay := call(t, h, http.MethodPost, "/orders", keyA, keyed("tx"), orderBody("ann", 1))
	if code != http.StatusCreated || again.Get("Idempotent-Replayed") != "true" || string(replay) != string(first) {
		t.Errorf("replay = %d (replayed %q) %s, want 201 replayed with %s", code, again.Get("Idempotent-Replayed"), replay, first)
	}
	for _, name := range []string{"Content-Type", "Location", "ETag"} {
		if again.Get(name) != hdr.Get(name) {
			t.Errorf("replayed %s = %q, want %q", name, again.Get(name), hdr.Get(name))
		}
	}
	for name, cfg := range map[string]Config{
		"memory repository": {Repository: mustMemory(t), IdempotencyStore: keys, CompleteInTx: keys},
		"another store":     {Repository: repo, CompleteInTx: keys},
	} {
		cfg.PaymentURL, cfg.APIKeys = pay.URL, testKeys
		if _, err := New(cfg); err == nil {
			t.Errorf("New with CompleteInTx and a %s = nil error, want one", name)
		}
	}
}

func mustMemory(t *testing.T) *MemoryRepository {
	r, err := NewMemoryRepository(4)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
