package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/idempotencytest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

const (
	fleetKeys     = 100
	fleetRequests = 1000
	childSchema   = "BULWARK_PGSTORE_CHILD_SCHEMA"
)

// fleetResult is what one process of the fleet reports.
type fleetResult struct {
	Won, Replayed, Conflicts int
	Errors                   []string
}

// serve handles one request for key as an order service does: it claims the
// key; the winner inserts the order row and stores its response in the same
// transaction; a duplicate that finds the key in flight asks again shortly,
// until it gets the stored response replayed.
func serve(ctx context.Context, s *Store, pool *pgxpool.Pool, orders, key string, res *fleetResult, mu *sync.Mutex) {
	record := func(f func()) {
		mu.Lock()
		f()
		mu.Unlock()
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		c, err := s.Claim(ctx, key, []byte("payload-"+key), time.Minute)
		switch {
		case err != nil:
		case c.Won:
			err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, "INSERT INTO "+orders+" (key) VALUES ($1)", key); err != nil {
					return err
				}
				return s.CompleteTx(ctx, tx, idempotency.NewLease(key, c.Token, time.Hour), []byte("order-for-"+key))
			})
			if err == nil {
				record(func() { res.Won++ })
				return
			}
		case c.Record.Completed:
			if string(c.Record.Value) != "order-for-"+key {
				err = fmt.Errorf("replay of %q = %q", key, c.Record.Value)
				break
			}
			record(func() { res.Replayed++ })
			return
		default:
			record(func() { res.Conflicts++ })
			time.Sleep(time.Millisecond) // a client's pause before asking again
			continue
		}
		record(func() { res.Errors = append(res.Errors, err.Error()) })
		return
	}
	record(func() { res.Errors = append(res.Errors, fmt.Sprintf("%q still in flight after a minute", key)) })
}

// hammer sends fleetRequests concurrent requests over fleetKeys keys, once
// the parent test says go (by releasing its advisory lock).
func hammer(t *testing.T, s *Store, pool *pgxpool.Pool, schema string) fleetResult {
	ctx := context.Background()
	_, err := pool.Exec(ctx, "INSERT INTO "+schema+".ready VALUES (1)")
	require.NoError(t, err)
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock_shared(hashtext($1)::bigint)", schema)
		return err
	})
	require.NoError(t, err)
	var (
		res fleetResult
		mu  sync.Mutex
		wg  sync.WaitGroup
	)
	start := make(chan struct{})
	for i := range fleetRequests {
		wg.Go(func() {
			<-start
			serve(ctx, s, pool, schema+".orders", "key-"+strconv.Itoa(i%fleetKeys), &res, &mu)
		})
	}
	close(start)
	wg.Wait()
	return res
}

// TestMultiProcessExactlyOnce starts two processes that each send 1,000
// concurrent requests over the same 100 keys through their own pool and
// Store: the guarded side effect, an order row insert, must happen exactly
// once per key.
func TestMultiProcessExactlyOnce(t *testing.T) {
	if schema := os.Getenv(childSchema); schema != "" {
		pool := serverPool(t, func(c *pgxpool.Config) { c.MaxConns = 8 })
		s, err := New(Config{Pool: pool, Table: schema + ".records"})
		require.NoError(t, err)
		out, _ := json.Marshal(hammer(t, s, pool, schema))
		fmt.Printf("\nRESULT %s\n", out)
		return
	}
	pool := serverPool(t)
	ctx := context.Background()
	schema := testSchema(t, pool)
	s := storeIn(t, pool, schema, nil)
	_, err := pool.Exec(ctx, "CREATE TABLE "+schema+".orders (id bigserial PRIMARY KEY, key text NOT NULL)")
	require.NoError(t, err)
	_, err = pool.Exec(ctx, "CREATE TABLE "+schema+".ready (n int)")
	require.NoError(t, err)

	// Hold an advisory lock that the children wait for, so both start
	// their requests at once.
	gate, err := pool.Acquire(ctx)
	require.NoError(t, err)
	_, err = gate.Exec(ctx, "SELECT pg_advisory_lock(hashtext($1)::bigint)", schema)
	require.NoError(t, err)
	released := false
	release := func() {
		if !released {
			released = true
			_, _ = gate.Exec(ctx, "SELECT pg_advisory_unlock(hashtext($1)::bigint)", schema)
			gate.Release()
		}
	}
	defer release()

	var results [2]fleetResult
	var errs [2]error
	var wg sync.WaitGroup
	for p := range results {
		wg.Go(func() {
			cmd := exec.Command(os.Args[0], "-test.run=^TestMultiProcessExactlyOnce$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), childSchema+"="+schema)
			out, err := cmd.CombinedOutput()
			if err != nil {
				errs[p] = fmt.Errorf("process %d: %v\n%s", p, err, out)
				return
			}
			_, line, ok := strings.Cut(string(out), "RESULT ")
			if !ok {
				errs[p] = fmt.Errorf("process %d printed no result:\n%s", p, out)
				return
			}
			line, _, _ = strings.Cut(line, "\n")
			errs[p] = json.Unmarshal([]byte(line), &results[p])
		})
	}
	require.Eventually(t, func() bool {
		var n int
		return pool.QueryRow(ctx, "SELECT count(*) FROM "+schema+".ready").Scan(&n) == nil && n == len(results)
	}, 60*time.Second, 5*time.Millisecond, "both processes ready")
	release()
	wg.Wait()
	require.NoError(t, errors.Join(errs[:]...))

	won := 0
	for p, r := range results {
		if len(r.Errors) > 0 {
			t.Errorf("process %d had %d errors, first %s", p, len(r.Errors), r.Errors[0])
		}
		if n := r.Won + r.Replayed + len(r.Errors); n != fleetRequests {
			t.Errorf("process %d accounted for %d requests, want %d", p, n, fleetRequests)
		}
		won += r.Won
		t.Logf("process %d: %d won, %d replayed, %d conflicts", p, r.Won, r.Replayed, r.Conflicts)
	}
	if won != fleetKeys {
		t.Errorf("claims won across both processes = %d, want %d", won, fleetKeys)
	}
	var rows, distinct int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*), count(DISTINCT key) FROM "+schema+".orders").Scan(&rows, &distinct))
	if rows != fleetKeys || distinct != fleetKeys {
		t.Errorf("order rows = %d over %d keys, want exactly %d, one per key", rows, distinct, fleetKeys)
	}
	for i := range fleetKeys {
		key := "key-" + strconv.Itoa(i)
		rec, err := s.Get(ctx, key)
		if err != nil || !rec.Completed || string(rec.Value) != "order-for-"+key {
			t.Errorf("Get(%q) = %+v, %v, want the completed record", key, rec, err)
		}
	}
}

// faultPool returns a pool through p.
func faultPool(t *testing.T, p *idempotencytest.FaultProxy) *pgxpool.Pool {
	cfg, err := pgxpool.ParseConfig(pgURL(t))
	require.NoError(t, err)
	return newPool(t, pgURL(t), func(c *pgxpool.Config) {
		c.ConnConfig.Host = "127.0.0.1"
		port, _ := strconv.Atoi(p.Addr()[strings.LastIndexByte(p.Addr(), ':')+1:])
		c.ConnConfig.Port = uint16(port)
		c.ConnConfig.ConnectTimeout = time.Second
		c.ConnConfig.Fallbacks = nil
		c.ConnConfig.Password = cfg.ConnConfig.Password
		c.MaxConns = 8
	})
}

// TestFaultConnectionCut cuts the link to PostgreSQL while workers run
// claim-then-complete requests, then restores it: the requests in the cut
// fail with a clear error, and once the server is back no key stays wedged
// past its lease.
func TestFaultConnectionCut(t *testing.T) {
	pool := serverPool(t)
	schema := testSchema(t, pool)
	storeIn(t, pool, schema, nil) // migrate directly
	p := idempotencytest.NewFaultProxy(t, pgAddr(t, pool))
	clk := bulwarktest.NewClock(time.Time{})
	s, err := New(Config{Pool: faultPool(t, p), Table: schema + ".records", TestClock: clk})
	require.NoError(t, err)
	idempotencytest.RunOutage(t, s, clk, p.Cut, p.Restore, func(err error) bool {
		return strings.HasPrefix(err.Error(), "pgstore: ") && (isNetError(err) || errors.Is(err, context.DeadlineExceeded) ||
			strings.Contains(err.Error(), "connection refused"))
	})
}

// pgAddr returns host:port of the test server.
func pgAddr(t *testing.T, pool *pgxpool.Pool) string {
	c := pool.Config().ConnConfig
	return c.Host + ":" + strconv.Itoa(int(c.Port))
}

// TestFaultDeadline black-holes the link: a call returns by its context's
// deadline with an error saying so, and the store works again once the link
// is back.
func TestFaultDeadline(t *testing.T) {
	pool := serverPool(t)
	schema := testSchema(t, pool)
	storeIn(t, pool, schema, nil)
	p := idempotencytest.NewFaultProxy(t, pgAddr(t, pool))
	clk := bulwarktest.NewClock(time.Time{})
	s, err := New(Config{Pool: faultPool(t, p), Table: schema + ".records", TestClock: clk})
	require.NoError(t, err)
	ctx := context.Background()

	c, err := s.Claim(ctx, "held", fp, lease)
	require.NoError(t, err)
	p.Blackhole()

	tests := []struct {
		op   string
		call func(context.Context) error
	}{
		{"claim", func(ctx context.Context) error { _, err := s.Claim(ctx, "k", fp, lease); return err }},
		{"complete", func(ctx context.Context) error { return s.Complete(ctx, "held", c.Token, nil, retention) }},
		{"get", func(ctx context.Context) error { _, err := s.Get(ctx, "k"); return err }},
	}
	for _, tt := range tests {
		const deadline = 200 * time.Millisecond
		cctx, cancel := context.WithTimeout(ctx, deadline)
		start := time.Now()
		err := tt.call(cctx)
		took := time.Since(start)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "pgstore: "+tt.op) {
			t.Errorf("%s with a black-holed link = %v, want a pgstore error wrapping context.DeadlineExceeded", tt.op, err)
		}
		if took > deadline+2*time.Second {
			t.Errorf("%s with a black-holed link took %v, want about its deadline %v", tt.op, took, deadline)
		}
	}

	p.Restore()
	var got idempotency.Record
	require.Eventually(t, func() bool {
		got, err = s.Get(ctx, "held")
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "Get after the link is restored")
	if got.Token != c.Token {
		t.Errorf("Get(%q) after restore = %+v, want token %d", "held", got, c.Token)
	}
}
