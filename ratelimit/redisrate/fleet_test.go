package redisrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	fleetEnv       = "BULWARK_REDISRATE_CHILD_PREFIX"
	fleetProcesses = 2 // child processes
	fleetClients   = 4 // goroutines, each with its own client, in every process
	fleetDuration  = 1500 * time.Millisecond
	fleetRate      = 200 // per second
	fleetBurst     = 20
	fleetSlot      = 50 * time.Millisecond // the grain of the time the fleet could ask
)

// fleetLimiter is the Limiter every client of the fleet uses: its own
// connection, the shared prefix.
func fleetLimiter(t *testing.T, prefix string) *Limiter {
	return newLimiter(t, newClient(t, redisAddr(t)), Config{Prefix: prefix, Rate: fleetRate, Burst: fleetBurst, Timeout: 5 * time.Second})
}

// hammerFleet waits for the parent's go, then has fleetClients goroutines
// take tokens of one key as fast as they can for fleetDuration. It returns
// the tokens allowed, the slots of wall-clock time (fleetSlot) in which a
// Take was answered, and the errors.
func hammerFleet(t *testing.T, prefix string) (allowed int64, slots []int64, errs []string) {
	ctx := context.Background()
	rdb := newClient(t, redisAddr(t))
	lims := make([]*Limiter, fleetClients)
	for i := range lims {
		lims[i] = fleetLimiter(t, prefix)
	}
	if err := rdb.Incr(ctx, prefix+"ready").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.BLPop(ctx, 30*time.Second, prefix+"go").Err(); err != nil {
		t.Fatal(err)
	}
	var (
		n      atomic.Int64
		mu     sync.Mutex
		active = map[int64]bool{} // guarded by mu
		wg     sync.WaitGroup
	)
	for _, l := range lims {
		wg.Go(func() {
			for end := time.Now().Add(fleetDuration); time.Now().Before(end); {
				r, err := l.Take(ctx, "shared", 1)
				slot := time.Now().UnixNano() / int64(fleetSlot)
				mu.Lock()
				active[slot] = true
				mu.Unlock()
				if err != nil {
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
					return
				}
				if r.Allowed {
					n.Add(1)
				}
			}
		})
	}
	wg.Wait()
	for s := range active {
		slots = append(slots, s)
	}
	return n.Load(), slots, errs
}

type fleetResult struct {
	Allowed int64
	Slots   []int64
	Errors  []string
}

// TestFleetNeverExceedsLimit runs clients in separate goroutines and separate
// processes, each with its own connection, against one key: together they
// never pass more than Burst + Rate × elapsed, elapsed measured on the
// server's clock from before the first request to after the last, and they
// pass at least half of Rate × the time each client runs, counting only the
// time in which the fleet could ask: on a loaded machine, Redis or the
// clients may stall for a good part of it, and a stall costs the tokens of
// its length beyond the burst.
func TestFleetNeverExceedsLimit(t *testing.T) {
	if prefix := os.Getenv(fleetEnv); prefix != "" {
		n, slots, errs := hammerFleet(t, prefix)
		out, _ := json.Marshal(fleetResult{n, slots, errs})
		fmt.Printf("\nRESULT %s\n", out)
		return
	}
	rdb := serverClient(t)
	prefix := testPrefix(t, rdb)
	ctx := context.Background()

	results := make([]fleetResult, fleetProcesses+1)
	errs := make([]error, fleetProcesses)
	var wg sync.WaitGroup
	for p := range fleetProcesses {
		wg.Go(func() {
			cmd := exec.Command(os.Args[0], "-test.run=^TestFleetNeverExceedsLimit$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), fleetEnv+"="+prefix)
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
	var start time.Time
	wg.Go(func() { // this process's clients
		n, slots, e := hammerFleet(t, prefix)
		results[fleetProcesses] = fleetResult{n, slots, e}
	})
	// Go when every process is ready.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if n, _ := rdb.Get(ctx, prefix+"ready").Int(); n == fleetProcesses+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the fleet did not get ready within a minute")
		}
	}
	start = serverTime(t, rdb)
	for range fleetProcesses + 1 {
		if err := rdb.RPush(ctx, prefix+"go", 1).Err(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	end := serverTime(t, rdb)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	var allowed int64
	active := map[int64]bool{} // slots in which some client was answered
	for p, r := range results {
		if len(r.Errors) > 0 {
			t.Errorf("process %d: %d errors, first %s", p, len(r.Errors), r.Errors[0])
		}
		allowed += r.Allowed
		for _, s := range r.Slots {
			active[s] = true
		}
	}
	asking := time.Duration(len(active)) * fleetSlot
	elapsed := end.Sub(start)
	interval := time.Second / fleetRate
	limit := fleetBurst + int64(elapsed/interval)
	t.Logf("%d processes × %d clients: %d allowed in %v (server clock), limit %d; answered in %v of it", fleetProcesses+1, fleetClients, allowed, elapsed, limit, asking)
	if allowed > limit {
		t.Fatalf("the fleet passed %d, above Burst + Rate × elapsed = %d", allowed, limit)
	}
	if floor := int64(0.5 * fleetRate * min(fleetDuration, asking).Seconds()); allowed < floor {
		t.Fatalf("the fleet passed only %d in the %v it was answered, want at least %d: the limiter refused more than its limit asks", allowed, asking, floor)
	}
}

// TestLimiterConcurrentSafe shares one Limiter, and its client, between
// goroutines hammering two keys: neither key passes more than its limit.
func TestLimiterConcurrentSafe(t *testing.T) {
	rdb := serverClient(t)
	l := newLimiter(t, rdb, Config{Rate: 100, Burst: 10, Timeout: 5 * time.Second})
	var (
		counts [2]atomic.Int64
		wg     sync.WaitGroup
	)
	start := serverTime(t, rdb)
	for g := range 8 {
		wg.Go(func() {
			for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
				r, err := l.Take(context.Background(), []string{"a", "b"}[g%2], 1)
				if err != nil {
					t.Error(err)
					return
				}
				if r.Allowed {
					counts[g%2].Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := serverTime(t, rdb).Sub(start)
	limit := 10 + int64(elapsed/(10*time.Millisecond))
	for i := range counts {
		if n := counts[i].Load(); n > limit || n == 0 {
			t.Errorf("key %d passed %d in %v, want within (0, %d]", i, n, elapsed, limit)
		}
	}
}
