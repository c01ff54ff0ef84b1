// Package idempotencytest holds the conformance suite that every
// [idempotency.Store] must pass. A store's own tests call [RunStore]:
//
//	func TestConformance(t *testing.T) {
//		idempotencytest.RunStore(t, func(t *testing.T, clk bulwark.Clock) idempotency.Store {
//			s, err := mystore.New(mystore.Config{Client: client, TestClock: clk})
//			require.NoError(t, err)
//			return s
//		})
//	}
//
// For a store that talks to a server, it also holds a crash test across
// processes ([RunCrashes]), an outage scenario ([RunOutage]) through a TCP
// proxy that fakes network faults ([FaultProxy]), a round-trip count
// ([CheckRoundTrips]), and benchmarks that report latency percentiles
// ([BenchClaimComplete], [BenchReplay], [RunClients]).
package idempotencytest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/idempotency"
)

// Durations the suite uses. They are whole milliseconds so that stores that
// keep time in milliseconds compare exactly.
const (
	lease     = 30 * time.Second
	retention = 24 * time.Hour
	tick      = time.Millisecond
)

// RunStore runs the conformance suite against the stores that newStore
// returns, one fresh store per subtest. newStore must return a store whose
// clock, the one that decides every expiry, is clk: a *bulwarktest.Clock
// that the suite advances by hand, so that no subtest sleeps. For a store
// whose server keeps the time, that is its explicit test-only replacement of
// the server's clock (redisstore's and pgstore's Config.TestClock). Its keys
// must not collide with those of other runs against the same server; the
// suite also prefixes its keys with a random string per run. newStore may
// register cleanups on t. Subtests do not run in parallel with each other;
// several exercise one store from many goroutines.
//
// The suite checks the contract written on idempotency.Store: claim,
// complete and replay; Get of missing, in-flight and completed keys;
// concurrent claims of one key, exactly one of which wins; lease expiry and
// takeover, by one claimant or by many at once; lease renewal with Extend,
// and the refusal of a renewal with a stale token; fencing of a stale
// owner's Complete and Release; release and re-claim; retention expiry;
// 1 MiB records; context cancellation; and that the store keeps its own
// copies of slices. Through two idempotency Engines whose clocks run 5
// seconds behind and 5 seconds ahead of the store's, it checks that a run
// kept alive for one and a half leases keeps its key, and is never taken
// over early by the other.
func RunStore(t *testing.T, newStore func(t *testing.T, clk bulwark.Clock) idempotency.Store) {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("random key prefix: %v", err)
	}
	prefix := "idemtest-" + hex.EncodeToString(b[:]) + "-"
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Start near the wall clock, on a whole second, so that
			// stores which also set server-side TTLs from the Clock's
			// time get sensible ones.
			clk := bulwarktest.NewClock(time.Now().UTC().Truncate(time.Second))
			st := newStore(t, clk)
			if st == nil {
				t.Fatal("newStore returned nil")
			}
			h := &harness{t: t, clk: clk, st: st, prefix: prefix + tc.name + "-"}
			tc.run(h)
		})
	}
}

var cases = []struct {
	name string
	run  func(h *harness)
}{
	{"ClaimCompleteReplay", testClaimCompleteReplay},
	{"GetStates", testGetStates},
	{"ClaimInFlight", testClaimInFlight},
	{"ConcurrentClaimsConcurrentSafe", testConcurrentClaims},
	{"ManyKeysConcurrentSafe", testManyKeys},
	{"LeaseExpiryAndTakeover", testLeaseTakeover},
	{"ConcurrentTakeoverConcurrentSafe", testConcurrentTakeover},
	{"ExtendLease", testExtend},
	{"ExtendFenced", testExtendFenced},
	{"EngineClockSkew", testEngineClockSkew},
	{"FencingAfterTakeover", testFencing},
	{"CompleteTwice", testCompleteTwice},
	{"ReleaseThenReclaim", testReleaseReclaim},
	{"ReleaseAfterComplete", testReleaseAfterComplete},
	{"RetentionExpiry", testRetention},
	{"LargeRecord", testLargeRecord},
	{"ContextCanceled", testContextCanceled},
	{"OwnCopies", testOwnCopies},
}

type harness struct {
	t      *testing.T
	clk    *bulwarktest.Clock
	st     idempotency.Store
	prefix string
}

func (h *harness) key(name string) string { return h.prefix + name }

func ctx(h *harness) context.Context { return h.t.Context() }

// claim claims key and fails the test on an error.
func (h *harness) claim(key string, fp []byte) idempotency.Claim {
	h.t.Helper()
	c, err := h.st.Claim(ctx(h), key, fp, lease)
	if err != nil {
		h.t.Fatalf("Claim(%q) error = %v, want nil", key, err)
	}
	return c
}

// win claims key and fails the test unless the claim won with a token.
func (h *harness) win(key string, fp []byte) idempotency.Claim {
	h.t.Helper()
	c := h.claim(key, fp)
	if !c.Won || c.Token == 0 {
		h.t.Fatalf("Claim(%q) = %+v, want Won with a non-zero Token", key, c)
	}
	return c
}

func (h *harness) complete(key string, token uint64, value []byte) {
	h.t.Helper()
	if err := h.st.Complete(ctx(h), key, token, value, retention); err != nil {
		h.t.Fatalf("Complete(%q, %d) error = %v, want nil", key, token, err)
	}
}

func (h *harness) get(key string) idempotency.Record {
	h.t.Helper()
	r, err := h.st.Get(ctx(h), key)
	if err != nil {
		h.t.Fatalf("Get(%q) error = %v, want nil", key, err)
	}
	return r
}

func (h *harness) notFound(key string) {
	h.t.Helper()
	r, err := h.st.Get(ctx(h), key)
	if !errors.Is(err, idempotency.ErrNotFound) {
		h.t.Fatalf("Get(%q) = %+v, %v; want ErrNotFound", key, r, err)
	}
}

func (h *harness) fenced(op string, err error) {
	h.t.Helper()
	if !errors.Is(err, idempotency.ErrFenced) {
		h.t.Fatalf("%s error = %v, want ErrFenced", op, err)
	}
}

// inFlight checks that r is the in-flight claim with token and fp.
func (h *harness) inFlight(what string, r idempotency.Record, key string, token uint64, fp []byte, leaseExpiry time.Time) {
	h.t.Helper()
	if r.Key != key || r.Completed || r.Token != token || !bytes.Equal(r.Fingerprint, fp) || !r.LeaseExpiry.Equal(leaseExpiry) {
		h.t.Fatalf("%s = %s, want in flight: key %q, token %d, fingerprint %x, lease expiry %v",
			what, show(r), key, token, fp, leaseExpiry)
	}
}

// completed checks that r is the completed record with token, fp and value.
func (h *harness) completed(what string, r idempotency.Record, key string, token uint64, fp, value []byte, expiresAt time.Time) {
	h.t.Helper()
	if r.Key != key || !r.Completed || r.Token != token || !bytes.Equal(r.Fingerprint, fp) ||
		!bytes.Equal(r.Value, value) || !r.ExpiresAt.Equal(expiresAt) {
		h.t.Fatalf("%s = %s, want completed: key %q, token %d, fingerprint %x, value %q, expires %v",
			what, show(r), key, token, fp, abbrev(value), expiresAt)
	}
}

func show(r idempotency.Record) string {
	return fmt.Sprintf("{Key:%q Completed:%v Token:%d Fingerprint:%x Value:%q LeaseExpiry:%v ExpiresAt:%v}",
		r.Key, r.Completed, r.Token, r.Fingerprint, abbrev(r.Value), r.LeaseExpiry, r.ExpiresAt)
}

func abbrev(b []byte) []byte {
	if len(b) > 64 {
		return append(append([]byte(nil), b[:64]...), "…"...)
	}
	return b
}

var (
	fpA = []byte("fingerprint-A-0123456789abcdef01")
	fpB = []byte("fingerprint-B-0123456789abcdef01")
)

func testClaimCompleteReplay(h *harness) {
	key := h.key("order")
	c := h.win(key, fpA)
	if c.TakenOver {
		h.t.Errorf("Claim(%q) of a fresh key: TakenOver = true, want false", key)
	}
	h.clk.Advance(2 * time.Second)
	h.complete(key, c.Token, []byte(`{"id":42}`))
	doneAt := h.clk.Now()
	h.completed("Get after Complete", h.get(key), key, c.Token, fpA, []byte(`{"id":42}`), doneAt.Add(retention))

	// A retry, with the same or another payload, is shown the record.
	for _, fp := range [][]byte{fpA, fpB} {
		again := h.claim(key, fp)
		if again.Won {
			h.t.Fatalf("Claim(%q) of a completed key = %+v, want not Won", key, again)
		}
		h.completed("Claim of a completed key: Record", again.Record, key, c.Token, fpA, []byte(`{"id":42}`), doneAt.Add(retention))
	}
}

func testGetStates(h *harness) {
	key := h.key("k")
	h.notFound(key)
	now := h.clk.Now()
	c := h.win(key, fpA)
	h.inFlight("Get of an in-flight key", h.get(key), key, c.Token, fpA, now.Add(lease))
	h.clk.Advance(tick)
	h.complete(key, c.Token, []byte("v"))
	h.completed("Get of a completed key", h.get(key), key, c.Token, fpA, []byte("v"), now.Add(tick).Add(retention))
	h.notFound(h.key("other"))

	// An empty value is a value.
	k2 := h.key("empty")
	c2 := h.win(k2, nil)
	h.complete(k2, c2.Token, nil)
	r := h.get(k2)
	if !r.Completed || len(r.Value) != 0 || len(r.Fingerprint) != 0 {
		h.t.Fatalf("Get(%q) of an empty completed record = %s, want completed with empty value and fingerprint", k2, show(r))
	}
}

func testClaimInFlight(h *harness) {
	key := h.key("k")
	now := h.clk.Now()
	c := h.win(key, fpA)
	h.clk.Advance(lease - tick)
	for _, fp := range [][]byte{fpA, fpB} {
		again := h.claim(key, fp)
		if again.Won {
			h.t.Fatalf("Claim(%q) of a live in-flight key = %+v, want not Won", key, again)
		}
		h.inFlight("Claim of an in-flight key: Record", again.Record, key, c.Token, fpA, now.Add(lease))
	}
	// The refused claims changed nothing: the owner still completes.
	h.complete(key, c.Token, []byte("v"))
}

func testConcurrentClaims(h *harness) {
	const (
		rounds     = 8
		goroutines = 32
	)
	for round := range rounds {
		key := h.key(fmt.Sprintf("round%d", round))
		var (
			wg     sync.WaitGroup
			start  = make(chan struct{})
			claims = make([]idempotency.Claim, goroutines)
			errs   = make([]error, goroutines)
		)
		for i := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				claims[i], errs[i] = h.st.Claim(ctx(h), key, fpA, lease)
			}()
		}
		close(start)
		wg.Wait()
		var winner idempotency.Claim
		wins := 0
		for i, err := range errs {
			if err != nil {
				h.t.Fatalf("concurrent Claim(%q) #%d error = %v, want nil", key, i, err)
			}
			if claims[i].Won {
				wins++
				winner = claims[i]
			}
		}
		if wins != 1 {
			h.t.Fatalf("%d concurrent Claim(%q): %d won, want exactly 1", goroutines, key, wins)
		}
		for i, c := range claims {
			if !c.Won && (c.Record.Completed || c.Record.Token != winner.Token) {
				h.t.Fatalf("concurrent Claim(%q) #%d = %s, want the winner's in-flight claim, token %d", key, i, show(c.Record), winner.Token)
			}
		}
		h.complete(key, winner.Token, []byte("done"))
	}
}

func testManyKeys(h *harness) {
	const (
		workers = 8
		keys    = 64
	)
	// Each worker claims and completes every key, in its own order, so that
	// workers race on every key. Each key is won exactly once and ends
	// completed with its winner's value.
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners = make(map[string]string)
		errs    = make(chan error, workers)
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			me := fmt.Sprintf("worker%d", w)
			for i := range keys {
				key := h.key(fmt.Sprintf("k%d", (i+w*7)%keys))
				c, err := h.st.Claim(ctx(h), key, fpA, lease)
				if err != nil {
					errs <- fmt.Errorf("Claim(%q): %w", key, err)
					return
				}
				if !c.Won {
					continue
				}
				mu.Lock()
				prev, dup := winners[key]
				winners[key] = me
				mu.Unlock()
				if dup {
					errs <- fmt.Errorf("Claim(%q) won by %s and %s", key, prev, me)
					return
				}
				if err := h.st.Complete(ctx(h), key, c.Token, []byte(me), retention); err != nil {
					errs <- fmt.Errorf("Complete(%q): %w", key, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		h.t.Fatal(err)
	}
	if len(winners) != keys {
		h.t.Fatalf("%d keys were won, want %d", len(winners), keys)
	}
	for key, w := range winners {
		r := h.get(key)
		if !r.Completed || string(r.Value) != w {
			h.t.Fatalf("Get(%q) = %s, want completed by %s", key, show(r), w)
		}
	}
}

func testLeaseTakeover(h *harness) {
	key := h.key("k")
	c := h.win(key, fpA)
	h.clk.Advance(lease - tick)
	if again := h.claim(key, fpA); again.Won {
		h.t.Fatalf("Claim(%q) %v before the lease ends = %+v, want not Won", key, tick, again)
	}
	h.get(key)
	h.clk.Advance(tick) // the lease ends now
	h.notFound(key)
	now := h.clk.Now()
	taken := h.win(key, fpB)
	if !taken.TakenOver {
		h.t.Errorf("Claim(%q) after the lease = %+v, want TakenOver", key, taken)
	}
	if taken.Token == c.Token {
		h.t.Fatalf("Claim(%q) after takeover reissued token %d", key, c.Token)
	}
	h.inFlight("Get after takeover", h.get(key), key, taken.Token, fpB, now.Add(lease))
	h.complete(key, taken.Token, []byte("second"))
	h.completed("Get after the new owner's Complete", h.get(key), key, taken.Token, fpB, []byte("second"), now.Add(retention))
}

func testFencing(h *harness) {
	key := h.key("k")
	dead := h.win(key, fpA)
	h.clk.Advance(lease + time.Second)

	// The dead worker's lease has passed: its late calls are refused even
	// before anybody takes over.
	h.fenced("Complete with an expired lease", h.st.Complete(ctx(h), key, dead.Token, []byte("late"), retention))
	h.fenced("Release with an expired lease", h.st.Release(ctx(h), key, dead.Token))

	now := h.clk.Now()
	owner := h.win(key, fpA)
	h.fenced("Complete by the stale owner", h.st.Complete(ctx(h), key, dead.Token, []byte("late"), retention))
	h.fenced("Release by the stale owner", h.st.Release(ctx(h), key, dead.Token))
	h.fenced("Complete with a token never issued", h.st.Complete(ctx(h), key, owner.Token+dead.Token+1000, []byte("x"), retention))
	h.inFlight("Get after refused stale calls", h.get(key), key, owner.Token, fpA, now.Add(lease))

	h.complete(key, owner.Token, []byte("owner"))
	h.fenced("Complete by the stale owner after the new owner's", h.st.Complete(ctx(h), key, dead.Token, []byte("late"), retention))
	h.completed("Get after all", h.get(key), key, owner.Token, fpA, []byte("owner"), now.Add(retention))

	h.fenced("Complete of a key never claimed", h.st.Complete(ctx(h), h.key("never"), 1, []byte("x"), retention))
	h.fenced("Release of a key never claimed", h.st.Release(ctx(h), h.key("never"), 1))
	h.notFound(h.key("never"))
}

func testCompleteTwice(h *harness) {
	key := h.key("k")
	c := h.win(key, fpA)
	h.complete(key, c.Token, []byte("first"))
	h.clk.Advance(time.Second)
	h.fenced("second Complete", h.st.Complete(ctx(h), key, c.Token, []byte("second"), retention))
	r := h.get(key)
	if string(r.Value) != "first" || !r.ExpiresAt.Equal(h.clk.Now().Add(retention-time.Second)) {
		h.t.Fatalf("Get(%q) after a refused second Complete = %s, want the first value, unchanged expiry", key, show(r))
	}
}

func testReleaseReclaim(h *harness) {
	key := h.key("k")
	c := h.win(key, fpA)
	if err := h.st.Release(ctx(h), key, c.Token); err != nil {
		h.t.Fatalf("Release(%q, %d) error = %v, want nil", key, c.Token, err)
	}
	h.notFound(key)
	h.fenced("second Release", h.st.Release(ctx(h), key, c.Token))
	again := h.win(key, fpB)
	if again.TakenOver {
		h.t.Errorf("Claim(%q) after Release: TakenOver = true, want false", key)
	}
	if again.Token == c.Token {
		h.t.Fatalf("Claim(%q) after Release reissued token %d", key, c.Token)
	}
	h.fenced("Complete by the released owner", h.st.Complete(ctx(h), key, c.Token, []byte("old"), retention))
	h.fenced("Release by the released owner", h.st.Release(ctx(h), key, c.Token))
	h.complete(key, again.Token, []byte("new"))
	if r := h.get(key); string(r.Value) != "new" || !bytes.Equal(r.Fingerprint, fpB) {
		h.t.Fatalf("Get(%q) = %s, want the re-claimer's value and fingerprint", key, show(r))
	}
}

func testReleaseAfterComplete(h *harness) {
	key := h.key("k")
	c := h.win(key, fpA)
	h.complete(key, c.Token, []byte("v"))
	h.fenced("Release after Complete", h.st.Release(ctx(h), key, c.Token))
	if r := h.get(key); !r.Completed || string(r.Value) != "v" {
		h.t.Fatalf("Get(%q) after a refused Release = %s, want the completed record", key, show(r))
	}
}

func testRetention(h *harness) {
	key := h.key("k")
	c := h.win(key, fpA)
	h.complete(key, c.Token, []byte("v"))
	h.clk.Advance(retention - tick)
	if again := h.claim(key, fpA); again.Won || !again.Record.Completed {
		h.t.Fatalf("Claim(%q) %v before retention ends = %+v, want the completed record", key, tick, again)
	}
	h.clk.Advance(tick)
	h.notFound(key)
	again := h.win(key, fpA)
	if again.TakenOver {
		h.t.Errorf("Claim(%q) after retention: TakenOver = true, want false", key)
	}
	if again.Token == c.Token {
		h.t.Fatalf("Claim(%q) after retention reissued token %d", key, c.Token)
	}
	h.fenced("Complete with the old token", h.st.Complete(ctx(h), key, c.Token, []byte("old"), retention))
	h.complete(key, again.Token, []byte("v2"))

	// Retention is per record: a short one expires first.
	short := h.key("short")
	cs := h.win(short, fpA)
	if err := h.st.Complete(ctx(h), short, cs.Token, []byte("s"), time.Minute); err != nil {
		h.t.Fatalf("Complete(%q) error = %v", short, err)
	}
	h.clk.Advance(time.Minute)
	h.notFound(short)
	if r := h.get(key); string(r.Value) != "v2" {
		h.t.Fatalf("Get(%q) = %s, want the record of 24 h retention", key, show(r))
	}
}

func testLargeRecord(h *harness) {
	key := h.key("big")
	value := make([]byte, 1<<20)
	for i := range value {
		value[i] = byte(i*7 + i>>11)
	}
	fp := bytes.Repeat([]byte{0xab}, 64)
	c := h.win(key, fp)
	h.complete(key, c.Token, value)
	r := h.get(key)
	if !bytes.Equal(r.Value, value) || !bytes.Equal(r.Fingerprint, fp) {
		h.t.Fatalf("Get(%q) of a 1 MiB record: %d bytes back, equal %v; want the same %d bytes",
			key, len(r.Value), bytes.Equal(r.Value, value), len(value))
	}
	again := h.claim(key, fp)
	if again.Won || !bytes.Equal(again.Record.Value, value) {
		h.t.Fatalf("Claim(%q) of a 1 MiB record: Won %v, %d bytes back; want the same %d bytes",
			key, again.Won, len(again.Record.Value), len(value))
	}
}

func testContextCanceled(h *harness) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	check := func(op string, err error) {
		h.t.Helper()
		if !errors.Is(err, context.Canceled) {
			h.t.Fatalf("%s with a canceled ctx: error = %v, want one wrapping context.Canceled", op, err)
		}
	}

	key := h.key("fresh")
	c, err := h.st.Claim(canceled, key, fpA, lease)
	check("Claim", err)
	if c.Won {
		h.t.Fatalf("Claim with a canceled ctx = %+v, want not Won", c)
	}
	h.notFound(key)
	_, err = h.st.Get(canceled, key)
	check("Get", err)

	owned := h.key("owned")
	oc := h.win(owned, fpA)
	check("Complete", h.st.Complete(canceled, owned, oc.Token, []byte("v"), retention))
	check("Release", h.st.Release(canceled, owned, oc.Token))
	// Neither changed anything: the claim is still in flight and its owner
	// can complete it.
	h.inFlight("Get after canceled calls", h.get(owned), owned, oc.Token, fpA, h.clk.Now().Add(lease))
	h.complete(owned, oc.Token, []byte("v"))
	if again := h.claim(owned, fpA); again.Won || string(again.Record.Value) != "v" {
		h.t.Fatalf("Claim(%q) = %+v, want the completed record", owned, again)
	}
}

func testOwnCopies(h *harness) {
	key := h.key("k")
	fp := []byte("fingerprint")
	c := h.win(key, fp)
	fp[0] = 'X'
	value := []byte("value")
	h.complete(key, c.Token, value)
	value[0] = 'X'
	r := h.get(key)
	if string(r.Fingerprint) != "fingerprint" || string(r.Value) != "value" {
		h.t.Fatalf("Get(%q) = %s after the caller reused its slices, want fingerprint %q and value %q",
			key, show(r), "fingerprint", "value")
	}
	r.Value[0] = 'Y'
	r.Fingerprint[0] = 'Y'
	if r2 := h.get(key); string(r2.Fingerprint) != "fingerprint" || string(r2.Value) != "value" {
		h.t.Fatalf("Get(%q) = %s after the caller modified a returned Record, want it unchanged", key, show(r2))
	}
}

func testConcurrentTakeover(h *harness) {
	// Many claimants race to take over one expired lease, round after
	// round: exactly one wins each round, with a new token, and the
	// previous owner is fenced.
	const claimants = 32
	key := h.key("k")
	owner := h.win(key, fpA).Token
	for round := range 6 {
		h.clk.Advance(lease)
		claims := make([]idempotency.Claim, claimants)
		errs := make([]error, claimants)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range claimants {
			wg.Go(func() {
				<-start
				claims[i], errs[i] = h.st.Claim(ctx(h), key, fpA, lease)
			})
		}
		close(start)
		wg.Wait()
		var won []idempotency.Claim
		for i := range claimants {
			if errs[i] != nil {
				h.t.Fatalf("round %d: concurrent Claim(%q) #%d error = %v, want nil", round, key, i, errs[i])
			}
			if claims[i].Won {
				won = append(won, claims[i])
			}
		}
		// TakenOver is not checked: a store may have collected the
		// expired record meanwhile (the MemoryStore's janitor does).
		if len(won) != 1 || won[0].Token == owner {
			h.t.Fatalf("round %d: %d concurrent takeovers of %q won (%+v), want exactly 1 with a new token",
				round, len(won), key, won)
		}
		for i, c := range claims {
			if !c.Won && (c.Record.Completed || c.Record.Token != won[0].Token) {
				h.t.Fatalf("round %d: losing Claim(%q) #%d = %s, want the new owner's claim, token %d",
					round, key, i, show(c.Record), won[0].Token)
			}
		}
		h.fenced(fmt.Sprintf("round %d: Complete by the previous owner", round),
			h.st.Complete(ctx(h), key, owner, []byte("late"), retention))
		owner = won[0].Token
	}
	h.complete(key, owner, []byte("last"))
}

func testExtend(h *harness) {
	key := h.key("k")
	c := h.win(key, fpA)
	h.clk.Advance(lease / 2)
	if err := h.st.Extend(ctx(h), key, c.Token, lease); err != nil {
		h.t.Fatalf("Extend(%q, %d) of a live claim error = %v, want nil", key, c.Token, err)
	}
	renewed := h.clk.Now().Add(lease)
	h.inFlight("Get after Extend", h.get(key), key, c.Token, fpA, renewed)

	// The first lease's end has passed; the renewed one holds.
	h.clk.Advance(lease / 2)
	if again := h.claim(key, fpB); again.Won {
		h.t.Fatalf("Claim(%q) after the first lease, within the renewed one = %+v, want not Won", key, again)
	}
	// Renewal again, with another length: the last one counts.
	if err := h.st.Extend(ctx(h), key, c.Token, 2*lease); err != nil {
		h.t.Fatalf("second Extend(%q) error = %v, want nil", key, err)
	}
	renewed = h.clk.Now().Add(2 * lease)
	h.inFlight("Get after the second Extend", h.get(key), key, c.Token, fpA, renewed)
	h.clk.Advance(2*lease - tick)
	if again := h.claim(key, fpB); again.Won {
		h.t.Fatalf("Claim(%q) %v before the renewed lease ends = %+v, want not Won", key, tick, again)
	}
	h.clk.Advance(tick)
	h.notFound(key)
	h.fenced("Extend after the renewed lease ended", h.st.Extend(ctx(h), key, c.Token, lease))
	taken := h.win(key, fpB)
	if !taken.TakenOver || taken.Token == c.Token {
		h.t.Fatalf("Claim(%q) after the renewed lease = %+v, want a takeover with a new token", key, taken)
	}

	// A renewed claim completes as any other.
	k2 := h.key("k2")
	c2 := h.win(k2, fpA)
	h.clk.Advance(lease - tick)
	if err := h.st.Extend(ctx(h), k2, c2.Token, lease); err != nil {
		h.t.Fatalf("Extend(%q) %v before the lease ends error = %v, want nil", k2, tick, err)
	}
	h.clk.Advance(lease - tick)
	h.complete(k2, c2.Token, []byte("v"))
	h.completed("Get of a renewed, completed key", h.get(k2), k2, c2.Token, fpA, []byte("v"), h.clk.Now().Add(retention))
}

func testExtendFenced(h *harness) {
	// A renewal with a token that no longer holds the live claim is
	// refused and changes nothing.
	key := h.key("taken")
	stale := h.win(key, fpA)
	h.clk.Advance(lease)
	h.fenced("Extend of an expired lease, not yet taken over", h.st.Extend(ctx(h), key, stale.Token, lease))
	h.notFound(key)
	now := h.clk.Now()
	owner := h.win(key, fpB)
	h.fenced("Extend by the owner whose lease was taken over", h.st.Extend(ctx(h), key, stale.Token, lease))
	h.fenced("Extend with a token never issued", h.st.Extend(ctx(h), key, owner.Token+stale.Token+1000, lease))
	h.inFlight("Get after refused renewals", h.get(key), key, owner.Token, fpB, now.Add(lease))
	h.clk.Advance(lease)
	h.notFound(key) // the stale renewals did not extend the new owner's lease

	done := h.key("completed")
	c := h.win(done, fpA)
	h.complete(done, c.Token, []byte("v"))
	h.fenced("Extend after Complete", h.st.Extend(ctx(h), done, c.Token, lease))
	h.completed("Get after a refused Extend", h.get(done), done, c.Token, fpA, []byte("v"), h.clk.Now().Add(retention))

	released := h.key("released")
	r := h.win(released, fpA)
	if err := h.st.Release(ctx(h), released, r.Token); err != nil {
		h.t.Fatalf("Release(%q) error = %v", released, err)
	}
	h.fenced("Extend after Release", h.st.Extend(ctx(h), released, r.Token, lease))
	h.notFound(released)

	h.fenced("Extend of a key never claimed", h.st.Extend(ctx(h), h.key("never"), 1, lease))
	h.notFound(h.key("never"))

	// A canceled ctx changes nothing; a lease of zero is an error.
	live := h.key("live")
	l := h.win(live, fpA)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.st.Extend(canceled, live, l.Token, 10*lease); !errors.Is(err, context.Canceled) {
		h.t.Fatalf("Extend with a canceled ctx error = %v, want one wrapping context.Canceled", err)
	}
	if err := h.st.Extend(ctx(h), live, l.Token, 0); err == nil || errors.Is(err, idempotency.ErrFenced) {
		h.t.Fatalf("Extend with a zero lease error = %v, want an argument error", err)
	}
	h.inFlight("Get after canceled and invalid renewals", h.get(live), live, l.Token, fpA, h.clk.Now().Add(lease))
}

// offsetClock is the suite's clock as seen by a process whose clock is off
// by off: its timers follow the suite's clock.
type offsetClock struct {
	*bulwarktest.Clock
	off time.Duration
}

func (c offsetClock) Now() time.Time                  { return c.Clock.Now().Add(c.off) }
func (c offsetClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// extendNotifier reports each Extend that returns.
type extendNotifier struct {
	idempotency.Store
	extended chan error
}

func (n *extendNotifier) Extend(ctx context.Context, key string, token uint64, lease time.Duration) error {
	err := n.Store.Extend(ctx, key, token, lease)
	n.extended <- err
	return err
}

func testEngineClockSkew(h *harness) {
	// Two instances of a service share the store; one's clock runs 5 s
	// behind the store's, the other's 5 s ahead. A run that lives for one
	// and a half leases keeps its key, renewed by its Engine, and the other
	// instance's duplicates are told it is in flight all along, whichever
	// instance owns it. The Engine renews at the first tick of its
	// renewer (every sixth of a lease) from a third of a lease on: at
	// every second tick here.
	const skew = 5 * time.Second
	period := lease / 6
	for _, tc := range []struct {
		name       string
		owner, dup time.Duration
	}{
		{"owner behind", -skew, skew},
		{"owner ahead", skew, -skew},
	} {
		key := h.key(strings.ReplaceAll(tc.name, " ", "-"))
		notify := &extendNotifier{Store: h.st, extended: make(chan error, 16)}
		owner, err := idempotency.New(idempotency.Config{Store: notify, Lease: lease, Clock: offsetClock{h.clk, tc.owner}})
		if err != nil {
			h.t.Fatalf("idempotency.New: %v", err)
		}
		dup, err := idempotency.New(idempotency.Config{Store: h.st, Lease: lease, Clock: offsetClock{h.clk, tc.dup}})
		if err != nil {
			h.t.Fatalf("idempotency.New: %v", err)
		}
		started, release := make(chan struct{}), make(chan struct{})
		first := make(chan error, 1)
		go func() {
			v, err := idempotency.Do(context.Background(), owner, key, fpA, func(ctx context.Context) (string, error) {
				close(started)
				select {
				case <-release:
				case <-ctx.Done():
					return "", context.Cause(ctx)
				}
				return "first", nil
			})
			if err == nil && v != "first" {
				err = fmt.Errorf("the run's result = %q, want first", v)
			}
			first <- err
		}()
		<-started
		var dupRuns int
		for i := 1; i <= 9; i++ { // to one and a half leases
			h.clk.Advance(period) // the renewals due run before it returns
			if i%2 == 0 {
				var err error
				select {
				case err = <-notify.extended:
				default:
					err = errors.New("no renewal")
				}
				if err != nil {
					close(release)
					<-first
					h.t.Fatalf("%s: renewal at %v = %v, want nil", tc.name, time.Duration(i)*period, err)
				}
			}
			_, err := idempotency.Do(ctx(h), dup, key, fpA, func(context.Context) (string, error) {
				dupRuns++
				return "second", nil
			})
			if !errors.Is(err, idempotency.ErrInFlight) || dupRuns != 0 {
				close(release)
				<-first
				h.t.Fatalf("%s: duplicate at %v of the lease: error %v, ran %d times; want ErrInFlight and no run",
					tc.name, time.Duration(i)*period, err, dupRuns)
			}
		}
		close(release)
		if err := <-first; err != nil {
			h.t.Fatalf("%s: the live run = %v, want its own result", tc.name, err)
		}
		v, err := idempotency.Do(ctx(h), dup, key, fpA, func(context.Context) (string, error) { return "second", nil })
		if err != nil || v != "first" {
			h.t.Fatalf("%s: duplicate after the run = %q, %v; want the run's result replayed", tc.name, v, err)
		}
	}
}
