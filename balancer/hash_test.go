package balancer_test

import (
	"fmt"
	"testing"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
)

// owners returns the endpoint each of keys goes to, one call at a time.
func owners(t *testing.T, lb *balancer.Balancer, keys []string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, k := range keys {
		pk, err := lb.Pick(k, nil)
		if err != nil {
			t.Fatalf("Pick(%q): %v", k, err)
		}
		got[k] = pk.Endpoint().Addr
		pk.Done(balancer.Outcome{})
	}
	return got
}

func TestConsistentHashIsSticky(t *testing.T) {
	eps := endpoints(10)
	lb, j := judged(t, balancer.Config{Algorithm: balancer.ConsistentHash, Endpoints: eps})
	keys := make([]string, 5000)
	for i := range keys {
		keys[i] = fmt.Sprintf("customer-%d", i)
	}
	first := owners(t, lb, keys)
	if again := owners(t, lb, keys); fmt.Sprint(again) != fmt.Sprint(first) {
		t.Errorf("owners changed between two passes with no change of the set")
	}
	per := map[string]int{}
	for _, addr := range first {
		per[addr]++
	}
	for _, ep := range eps {
		if n := per[ep.Addr]; n < 250 || n > 750 {
			t.Errorf("keys owned by %s = %d of 5000, want about 500", ep.Addr, n)
		}
	}

	// The owner of some keys becomes unhealthy: those keys go to their next
	// owner, the same one every time, and no other key moves.
	down := eps[4]
	j.set(down, false)
	moved := owners(t, lb, keys)
	if again := owners(t, lb, keys); fmt.Sprint(again) != fmt.Sprint(moved) {
		t.Errorf("fallback owners are not stable")
	}
	for _, k := range keys {
		switch {
		case moved[k] == down.Addr:
			t.Fatalf("Pick(%q) = the unhealthy owner", k)
		case first[k] != down.Addr && moved[k] != first[k]:
			t.Errorf("Pick(%q) moved from %s to %s, though its owner is healthy", k, first[k], moved[k])
		}
	}
	j.set(down, true)
	if back := owners(t, lb, keys); fmt.Sprint(back) != fmt.Sprint(first) {
		t.Errorf("owners after recovery differ from the original owners")
	}

	// Adding an endpoint moves only the keys it now owns.
	if err := lb.Update(append(eps, bulwark.Endpoint{Addr: "10.9.9.9:80"})); err != nil {
		t.Fatal(err)
	}
	grown := owners(t, lb, keys)
	movedKeys := 0
	for _, k := range keys {
		if grown[k] != first[k] {
			movedKeys++
			if grown[k] != "10.9.9.9:80" {
				t.Errorf("Pick(%q) moved to %s, want only moves to the new endpoint", k, grown[k])
			}
		}
	}
	if movedKeys < 200 || movedKeys > 800 {
		t.Errorf("keys moved to the new endpoint = %d of 5000, want about 1/11", movedKeys)
	}
}

func TestConsistentHashBoundsLoad(t *testing.T) {
	eps := endpoints(4)
	lb := mustNew(t, balancer.Config{Algorithm: balancer.ConsistentHash, Endpoints: eps, LoadFactor: 1.25})
	// One hot key, held in flight: its owner takes its bound, then the rest
	// spills to the next owners.
	var held []balancer.Pick
	per := map[string]int{}
	for i := range 100 {
		pk, err := lb.Pick("hot", nil)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, pk)
		per[pk.Endpoint().Addr]++
		m := i + 1
		limit := (5*m + 15) / 16 // ⌈1.25·m/4⌉
		for addr, n := range per {
			if n > limit {
				t.Fatalf("after %d calls in flight, %s holds %d, want at most ⌈1.25·%d/4⌉ = %d", m, addr, n, m, limit)
			}
		}
	}
	if len(per) != 4 {
		t.Errorf("hot key spread over %v, want all four endpoints", per)
	}
	for i := range held {
		held[i].Done(balancer.Outcome{})
	}
	// With the load gone, the key is back on its owner.
	got := owners(t, lb, []string{"hot", "hot", "hot"})
	if got["hot"] != held[0].Endpoint().Addr {
		t.Errorf("Pick(hot) after the load = %s, want its owner %s", got["hot"], held[0].Endpoint().Addr)
	}
}

func TestConsistentHashPrefersZone(t *testing.T) {
	eps := []bulwark.Endpoint{{Addr: "a1", Zone: "a"}, {Addr: "a2", Zone: "a"}, {Addr: "b1", Zone: "b"}, {Addr: "b2", Zone: "b"}, {Addr: "b3", Zone: "b"}}
	lb := mustNew(t, balancer.Config{Algorithm: balancer.ConsistentHash, Endpoints: eps, Zone: "a"})
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprint("k", i)
	}
	per := map[string]int{}
	for _, addr := range owners(t, lb, keys) {
		per[addr]++
	}
	if per["a1"]+per["a2"] != 1000 || per["a1"] < 300 || per["a2"] < 300 {
		t.Errorf("keys per endpoint with zone a preferred = %v, want all in zone a, split", per)
	}
}
