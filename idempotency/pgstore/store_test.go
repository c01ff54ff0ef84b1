package pgstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/idempotencytest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

const (
	lease     = 30 * time.Second
	retention = 24 * time.Hour
)

var fp = []byte("fingerprint")

func TestNew(t *testing.T) {
	pool, err := pgxpool.New(context.Background(), "postgres://u@127.0.0.1:1/db") // connects lazily
	require.NoError(t, err)
	defer pool.Close()
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "nil pool", cfg: Config{}, wantErr: "Pool is nil"},
		{name: "negative interval", cfg: Config{Pool: pool, ReapInterval: -time.Second}, wantErr: "ReapInterval"},
		{name: "negative batch", cfg: Config{Pool: pool, ReapBatch: -1}, wantErr: "ReapBatch"},
		{name: "quote in table", cfg: Config{Pool: pool, Table: `a"b`}, wantErr: "is not a letter"},
		{name: "three parts", cfg: Config{Pool: pool, Table: "a.b.c"}, wantErr: "more than a schema"},
		{name: "empty part", cfg: Config{Pool: pool, Table: "a."}, wantErr: "is not a letter"},
		{name: "leading digit", cfg: Config{Pool: pool, Table: "1abc"}, wantErr: "is not a letter"},
		{name: "long table", cfg: Config{Pool: pool, Table: strings.Repeat("t", 51)}, wantErr: "longer than 50"},
		{name: "long schema", cfg: Config{Pool: pool, Table: strings.Repeat("s", 64) + ".t"}, wantErr: "longer than 63"},
		{name: "defaults", cfg: Config{Pool: pool}},
		{name: "schema-qualified", cfg: Config{Pool: pool, Table: "Idem.Records_2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.cfg)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalidConfig) || s != nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New(%s) = %v, %v; want ErrInvalidConfig containing %q", tt.name, s, err, tt.wantErr)
				}
				return
			}
			require.NoError(t, err)
			if s.interval != time.Minute || s.batch != 1000 {
				t.Errorf("New(%s) interval, batch = %v, %d, want 1m0s, 1000", tt.name, s.interval, s.batch)
			}
		})
	}
}

func TestConformance(t *testing.T) {
	pool := serverPool(t)
	idempotencytest.RunStore(t, func(t *testing.T, clk bulwark.Clock) idempotency.Store {
		return newStore(t, pool, clk)
	})
}

func TestMigrateConcurrentSafe(t *testing.T) {
	pool := serverPool(t)
	schema := testSchema(t, pool)
	s, err := New(Config{Pool: pool, Table: schema + ".records"})
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = s.Migrate(context.Background()) })
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	require.NoError(t, s.Migrate(context.Background()), "Migrate of an existing table")
	c, err := s.Claim(context.Background(), "k", fp, lease)
	require.NoError(t, err)
	if !c.Won {
		t.Fatalf("Claim after Migrate = %+v, want Won", c)
	}
}

func TestRoundTrips(t *testing.T) {
	h := &counter{}
	pool := serverPool(t, func(c *pgxpool.Config) { c.ConnConfig.Tracer = h })
	s := newStore(t, pool, bulwarktest.NewClock(time.Time{}))
	idempotencytest.CheckRoundTrips(t, s, h.n.Load)
}

// TestCompleteTx stores the result in the same transaction as the business
// write: both commit or both roll back.
func TestCompleteTx(t *testing.T) {
	ctx := context.Background()
	pool := serverPool(t)
	clk := bulwarktest.NewClock(time.Time{})
	s := newStore(t, pool, clk)
	orders := strings.TrimSuffix(s.table, `."records"`) + ".orders"
	_, err := pool.Exec(ctx, "CREATE TABLE "+orders+" (key text NOT NULL, item text NOT NULL)")
	require.NoError(t, err)
	countOrders := func(key string) int {
		var n int
		require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+orders+" WHERE key = $1", key).Scan(&n))
		return n
	}
	// order runs the business transaction: insert the order, store the
	// response, then commit or roll back.
	order := func(key string, token uint64, commit bool) error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO "+orders+" VALUES ($1, 'book')", key); err != nil {
				return err
			}
			if err := s.CompleteTx(ctx, tx, idempotency.NewLease(key, token, retention), []byte("order "+key)); err != nil {
				return err
			}
			if !commit {
				return errors.New("payment declined")
			}
			return nil
		})
	}

	t.Run("commit", func(t *testing.T) {
		c, err := s.Claim(ctx, "commit", fp, lease)
		require.NoError(t, err)
		require.NoError(t, order("commit", c.Token, true))
		rec, err := s.Get(ctx, "commit")
		require.NoError(t, err)
		if n := countOrders("commit"); n != 1 || !rec.Completed || string(rec.Value) != "order commit" {
			t.Errorf("after a committed order: %d orders, record %+v; want 1 and the completed record", n, rec)
		}
	})
	t.Run("rollback", func(t *testing.T) {
		c, err := s.Claim(ctx, "rollback", fp, lease)
		require.NoError(t, err)
		require.Error(t, order("rollback", c.Token, false))
		rec, err := s.Get(ctx, "rollback")
		require.NoError(t, err)
		if n := countOrders("rollback"); n != 0 || rec.Completed || rec.Token != c.Token {
			t.Errorf("after a rolled-back order: %d orders, record %+v; want 0 and the claim still in flight", n, rec)
		}
		require.NoError(t, s.Release(ctx, "rollback", c.Token), "Release after the rollback")
	})
	t.Run("fenced", func(t *testing.T) {
		c, err := s.Claim(ctx, "fenced", fp, lease)
		require.NoError(t, err)
		clk.Advance(lease)
		taken, err := s.Claim(ctx, "fenced", fp, lease)
		require.NoError(t, err)
		require.True(t, taken.Won, "takeover")
		err = order("fenced", c.Token, true)
		if !errors.Is(err, idempotency.ErrFenced) {
			t.Fatalf("CompleteTx by the stale owner = %v, want ErrFenced", err)
		}
		if n := countOrders("fenced"); n != 0 {
			t.Errorf("orders after a fenced CompleteTx = %d, want 0 (rolled back)", n)
		}
	})
	t.Run("duplicate during the transaction", func(t *testing.T) {
		c, err := s.Claim(ctx, "dup", fp, lease)
		require.NoError(t, err)
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx)
		_, err = tx.Exec(ctx, "INSERT INTO "+orders+" VALUES ('dup', 'book')")
		require.NoError(t, err)
		require.NoError(t, s.CompleteTx(ctx, tx, idempotency.NewLease("dup", c.Token, retention), []byte("order dup")))

		// The duplicate's insert waits for the business transaction, which
		// holds the record, and the duplicate is then answered from the
		// state it began with (in flight) or the committed one.
		dup := make(chan idempotency.Claim, 1)
		go func() {
			d, err := s.Claim(ctx, "dup", fp, lease)
			if err != nil {
				t.Errorf("duplicate Claim: %v", err)
			}
			dup <- d
		}()
		require.Eventually(t, func() bool {
			var n int
			err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'`, s.table).Scan(&n)
			return err == nil && n == 1
		}, 10*time.Second, 5*time.Millisecond, "the duplicate Claim waits on the business transaction")
		require.NoError(t, tx.Commit(ctx))
		if d := <-dup; d.Won || d.Record.Token != c.Token || (d.Record.Completed && string(d.Record.Value) != "order dup") {
			t.Errorf("duplicate Claim during the business transaction = %+v, want the claim in flight or its committed result", d)
		}
		d, err := s.Claim(ctx, "dup", fp, lease)
		require.NoError(t, err)
		if d.Won || !d.Record.Completed || string(d.Record.Value) != "order dup" {
			t.Errorf("duplicate Claim after the commit = %+v, want the committed result", d)
		}
	})
	t.Run("takeover waits for the transaction", func(t *testing.T) {
		// The lease passes while the business transaction runs; a
		// takeover waits for it and then finds the key completed.
		c, err := s.Claim(ctx, "late", fp, lease)
		require.NoError(t, err)
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx)
		require.NoError(t, s.CompleteTx(ctx, tx, idempotency.NewLease("late", c.Token, retention), []byte("order late")))
		clk.Advance(lease)

		dup := make(chan idempotency.Claim, 1)
		go func() {
			d, err := s.Claim(ctx, "late", fp, lease)
			if err != nil {
				t.Errorf("Claim after the lease: %v", err)
			}
			dup <- d
		}()
		require.Eventually(t, func() bool {
			var n int
			err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'`, s.table).Scan(&n)
			return err == nil && n == 1
		}, 10*time.Second, 5*time.Millisecond, "the takeover waits on the record's lock")
		require.NoError(t, tx.Commit(ctx))
		d := <-dup
		if d.Won || !d.Record.Completed || string(d.Record.Value) != "order late" {
			t.Errorf("Claim after the lease, racing the commit = %+v, want the committed result", d)
		}
	})
	t.Run("nil tx", func(t *testing.T) {
		if err := s.CompleteTx(ctx, nil, idempotency.NewLease("k", 1, retention), nil); err == nil {
			t.Errorf("CompleteTx with a nil tx = nil, want an error")
		}
		if err := s.CompleteTx(ctx, nil, nil, nil); err == nil {
			t.Errorf("CompleteTx with a nil lease = nil, want an error")
		}
	})
}

func TestReap(t *testing.T) {
	ctx := context.Background()
	pool := serverPool(t)
	clk := bulwarktest.NewClock(time.Time{})
	s := newStore(t, pool, clk)
	s.batch = 2 // several DELETEs per pass

	claim := func(key string, lease time.Duration) uint64 {
		c, err := s.Claim(ctx, key, fp, lease)
		require.NoError(t, err)
		return c.Token
	}
	for i := range 3 {
		claim(fmt.Sprintf("inflight-expired-%d", i), time.Minute)
		tok := claim(fmt.Sprintf("done-expired-%d", i), time.Minute)
		require.NoError(t, s.Complete(ctx, fmt.Sprintf("done-expired-%d", i), tok, []byte("v"), time.Minute))
	}
	claim("inflight-live", time.Hour)
	tok := claim("done-live", time.Minute)
	require.NoError(t, s.Complete(ctx, "done-live", tok, []byte("v"), time.Hour))

	if n, err := s.Reap(ctx); err != nil || n != 0 {
		t.Fatalf("Reap before anything expired = %d, %v, want 0, nil", n, err)
	}
	clk.Advance(time.Minute)
	n, err := s.Reap(ctx)
	require.NoError(t, err)
	if n != 6 {
		t.Errorf("Reap a minute later = %d, want 6", n)
	}
	var left []string
	rows, err := pool.Query(ctx, "SELECT key FROM "+s.table+" ORDER BY key")
	require.NoError(t, err)
	left, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"done-live", "inflight-live"}, left, "records left after Reap")
}

func TestReaperStartClose(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool := serverPool(t)
	clk := bulwarktest.NewClock(time.Time{})
	s := newStore(t, pool, clk)
	s.interval = time.Minute
	_, err := s.Claim(ctx, "k", fp, 30*time.Second)
	require.NoError(t, err)

	require.NoError(t, s.Start(ctx))
	if err := s.Start(ctx); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start = %v, want ErrStarted", err)
	}
	require.NoError(t, clk.BlockUntil(ctx, 1)) // the first pass ran and the reaper waits
	var n int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+s.table).Scan(&n))
	require.Equal(t, 1, n, "records after the first pass")

	clk.Advance(time.Minute) // the claim expired; the second pass reaps it
	require.Eventually(t, func() bool {
		return pool.QueryRow(ctx, "SELECT count(*) FROM "+s.table).Scan(&n) == nil && n == 0
	}, 10*time.Second, 5*time.Millisecond, "the second pass reaps the expired claim")
	require.NoError(t, s.Close()) // returns once the reaper has returned
	if n := clk.Timers(); n != 0 {
		t.Errorf("%d timers pending after Close, want 0: the reaper still waits", n)
	}
	require.NoError(t, s.Close())
	if err := s.Start(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
	// The Store itself keeps working after Close.
	if _, err := s.Claim(ctx, "k2", fp, 30*time.Second); err != nil {
		t.Errorf("Claim after Close = %v, want nil", err)
	}
}

func TestReaperReportsErrors(t *testing.T) {
	pool := serverPool(t)
	events := make(chan bulwark.Event, 10)
	s, err := New(Config{Pool: pool, Table: testSchema(t, pool) + ".missing", TestClock: bulwarktest.NewClock(time.Time{}),
		Name: "orders", Observer: bulwark.ObserverFunc(func(e bulwark.Event) { events <- e })})
	require.NoError(t, err)
	require.NoError(t, s.Start(context.Background()))
	e := <-events
	require.NoError(t, s.Close())
	if e.Kind != bulwark.EventStoreError || e.Component != bulwark.ComponentIdempotency || e.Name != "orders" ||
		e.Reason != "reap" || e.Err == nil || !strings.Contains(e.Err.Error(), "pgstore: reap") {
		t.Errorf("event of a failed reap = %+v, want a store error from the reaper", e)
	}
}

func TestArgumentErrors(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, serverPool(t), bulwarktest.NewClock(time.Time{}))
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"zero lease", func() error { _, err := s.Claim(ctx, "k", fp, 0); return err }, "lease"},
		{"zero retention", func() error { return s.Complete(ctx, "k", 1, nil, 0) }, "retention"},
		{"token beyond int64", func() error { return s.Complete(ctx, "k", 1<<63, nil, retention) }, "stale fencing token"},
		{"release token beyond int64", func() error { return s.Release(ctx, "k", 1<<63) }, "stale fencing token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: error = %v, want one containing %q", tt.name, err, tt.want)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now
	pool := newPool(t, "postgres://postgres@"+addr+"/db?sslmode=disable&connect_timeout=2")
	s, err := New(Config{Pool: pool})
	require.NoError(t, err)
	ctx := context.Background()
	tests := []struct {
		op   string
		call func() error
	}{
		{"claim", func() error { _, err := s.Claim(ctx, "k", fp, lease); return err }},
		{"complete", func() error { return s.Complete(ctx, "k", 1, nil, retention) }},
		{"release", func() error { return s.Release(ctx, "k", 1) }},
		{"get", func() error { _, err := s.Get(ctx, "k"); return err }},
		{"migrate", func() error { return s.Migrate(ctx) }},
	}
	for _, tt := range tests {
		err := tt.call()
		want := "pgstore: " + tt.op + " "
		if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("%s with PostgreSQL down = %v, want an error starting %q and saying connection refused", tt.op, err, want)
		}
	}
}

// TestReapConcurrentSafe races the reaper against claims that take over or
// re-create expired records: each key is won exactly once per round, and no
// live record is ever reaped.
func TestReapConcurrentSafe(t *testing.T) {
	ctx := context.Background()
	pool := serverPool(t)
	clk := bulwarktest.NewClock(time.Time{})
	s := newStore(t, pool, clk)
	s.batch = 4
	const keys, workers, rounds = 24, 6, 4
	for round := range rounds {
		stop := make(chan struct{})
		reaped := make(chan error, 1)
		go func() {
			for {
				select {
				case <-stop:
					reaped <- nil
					return
				default:
				}
				if _, err := s.Reap(ctx); err != nil {
					reaped <- err
					return
				}
			}
		}()
		var (
			mu   sync.Mutex
			wins = map[string]int{}
			wg   sync.WaitGroup
			errs = make(chan error, workers)
		)
		value := []byte(fmt.Sprintf("round-%d", round))
		for w := range workers {
			wg.Go(func() {
				for i := range keys {
					key := fmt.Sprintf("k%d", (i+w*5)%keys)
					c, err := s.Claim(ctx, key, fp, lease)
					if err == nil && c.Won {
						mu.Lock()
						wins[key]++
						mu.Unlock()
						err = s.Complete(ctx, key, c.Token, value, time.Minute)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(stop)
		require.NoError(t, <-reaped)
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for i := range keys {
			key := fmt.Sprintf("k%d", i)
			if wins[key] != 1 {
				t.Errorf("round %d: Claim(%q) won %d times, want 1", round, key, wins[key])
			}
			rec, err := s.Get(ctx, key)
			if err != nil || string(rec.Value) != string(value) {
				t.Errorf("round %d: Get(%q) = %+v, %v, want the record completed this round", round, key, rec, err)
			}
		}
		clk.Advance(time.Minute) // every record expires
	}
}
