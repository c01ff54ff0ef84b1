package redisstore

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
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

const (
	fleetKeys     = 100
	fleetRequests = 1000
	childPrefix   = "BULWARK_REDISSTORE_CHILD_PREFIX"
)

// fleetResult is what one process of the fleet reports.
type fleetResult struct {
	Won, Replayed, Conflicts int
	Errors                   []string
}

// serve handles one request for key the way an idempotent handler and a
// retrying client do together: it claims the key; the winner performs the
// side effect (an INCR of a counter beside the record) and completes the key
// with its result; a loser that finds the key in flight asks again shortly,
// until it gets the stored result replayed.
func serve(ctx context.Context, s *Store, rdb redis.UniversalClient, key string, res *fleetResult, mu *sync.Mutex) {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		c, err := s.Claim(ctx, key, []byte("payload-"+key), time.Minute)
		switch {
		case err != nil:
		case c.Won:
			err = rdb.Incr(ctx, s.prefix+"effect:{"+key+"}").Err()
			if err == nil {
				err = s.Complete(ctx, key, c.Token, []byte("order-for-"+key), time.Hour)
			}
			if err == nil {
				mu.Lock()
				res.Won++
				mu.Unlock()
				return
			}
		case c.Record.Completed:
			if string(c.Record.Value) != "order-for-"+key {
				err = fmt.Errorf("replay of %q = %q", key, c.Record.Value)
				break
			}
			mu.Lock()
			res.Replayed++
			mu.Unlock()
			return
		default:
			mu.Lock()
			res.Conflicts++
			mu.Unlock()
			time.Sleep(time.Millisecond) // a client's pause before asking again
			continue
		}
		mu.Lock()
		res.Errors = append(res.Errors, err.Error())
		mu.Unlock()
		return
	}
	mu.Lock()
	res.Errors = append(res.Errors, fmt.Sprintf("%q still in flight after a minute", key))
	mu.Unlock()
}

// hammer sends fleetRequests concurrent requests over fleetKeys keys, once
// the parent test says go.
func hammer(t *testing.T, s *Store, rdb redis.UniversalClient) fleetResult {
	ctx := context.Background()
	require.NoError(t, rdb.Incr(ctx, s.prefix+"ready").Err())
	require.NoError(t, rdb.BLPop(ctx, 30*time.Second, s.prefix+"go").Err())
	var (
		res fleetResult
		mu  sync.Mutex
		wg  sync.WaitGroup
	)
	start := make(chan struct{})
	for i := range fleetRequests {
		wg.Go(func() {
			<-start
			serve(ctx, s, rdb, "key-"+strconv.Itoa(i%fleetKeys), &res, &mu)
		})
	}
	close(start)
	wg.Wait()
	return res
}

// TestMultiProcessExactlyOnce starts two processes that each send 1,000
// concurrent requests over the same 100 keys through their own client and
// Store: the guarded side effect must happen exactly once per key.
func TestMultiProcessExactlyOnce(t *testing.T) {
	if prefix := os.Getenv(childPrefix); prefix != "" {
		rdb := newClient(t, redisAddr(t))
		s, err := New(Config{Client: rdb, Prefix: prefix})
		require.NoError(t, err)
		out, _ := json.Marshal(hammer(t, s, rdb))
		fmt.Printf("\nRESULT %s\n", out)
		return
	}
	rdb := serverClient(t)
	prefix := testPrefix(t, rdb)

	var results [2]fleetResult
	var errs [2]error
	var wg sync.WaitGroup
	ctx := context.Background()
	wg.Go(func() { // start both processes' requests at once
		for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(5 * time.Millisecond) {
			if n, _ := rdb.Get(ctx, prefix+"ready").Int(); n == len(results) {
				rdb.RPush(ctx, prefix+"go", 1, 2)
				return
			}
		}
	})
	for p := range results {
		wg.Go(func() {
			cmd := exec.Command(os.Args[0], "-test.run=^TestMultiProcessExactlyOnce$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), childPrefix+"="+prefix)
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
	s, err := New(Config{Client: rdb, Prefix: prefix})
	require.NoError(t, err)
	for i := range fleetKeys {
		key := "key-" + strconv.Itoa(i)
		n, err := rdb.Get(ctx, prefix+"effect:{"+key+"}").Int()
		if err != nil || n != 1 {
			t.Errorf("side effects for %q = %d (%v), want exactly 1", key, n, err)
		}
		rec, err := s.Get(ctx, key)
		if err != nil || !rec.Completed || string(rec.Value) != "order-for-"+key {
			t.Errorf("Get(%q) = %+v, %v, want the completed record", key, rec, err)
		}
	}
}

// faultClient returns a client through p that gives up quickly, so a cut
// link costs each call little time.
func faultClient(t *testing.T, p *idempotencytest.FaultProxy) *redis.Client {
	return newClient(t, p.Addr(), func(o *redis.Options) {
		o.MaxRetries = 1
		o.DialTimeout = time.Second
		o.ReadTimeout = time.Second
		o.WriteTimeout = time.Second
	})
}

// TestFaultConnectionCut cuts the link to Redis while workers run
// claim-then-complete requests, then restores it: the requests in the cut
// fail with a clear error, and once the server is back no key stays wedged
// past its lease.
func TestFaultConnectionCut(t *testing.T) {
	serverClient(t)
	p := idempotencytest.NewFaultProxy(t, redisAddr(t))
	rdb := faultClient(t, p)
	clk := bulwarktest.NewClock(time.Time{})
	s := newStore(t, rdb, clk)
	idempotencytest.RunOutage(t, s, clk, p.Cut, p.Restore, func(err error) bool {
		return strings.Contains(err.Error(), "store: ") && (isNetError(err) || errors.Is(err, context.DeadlineExceeded))
	})
}

// TestFaultDeadline black-holes the link: a call returns by its context's
// deadline with an error saying so, and the store works again once the link
// is back.
func TestFaultDeadline(t *testing.T) {
	serverClient(t)
	p := idempotencytest.NewFaultProxy(t, redisAddr(t))
	rdb := newClient(t, p.Addr(), func(o *redis.Options) { o.MaxRetries = 1 })
	clk := bulwarktest.NewClock(time.Time{})
	s := newStore(t, rdb, clk)
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
		if !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "redisstore: "+tt.op) {
			t.Errorf("%s with a black-holed link = %v, want a redisstore error wrapping context.DeadlineExceeded", tt.op, err)
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
