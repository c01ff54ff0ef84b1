package balancer_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
)

// FuzzBalancer runs a sequence of updates, health changes, ejections and
// picks, decoded from the input, against a model of the endpoint set, and
// checks that every pick lands on a member of the current set, on an eligible
// one unless the balancer is in panic mode, and that errors match the set.
func FuzzBalancer(f *testing.F) {
	f.Add([]byte{0, 0, 0xff, 3, 3, 1, 2, 3, 2, 5, 3, 4, 4})
	f.Add([]byte{1, 0, 0x0f, 1, 0, 1, 1, 2, 3, 3, 0, 0xf0, 3})
	f.Add([]byte{3, 0, 0x81, 3, 4, 4, 3, 1, 7, 2, 0, 3, 3})
	f.Add([]byte{2, 0, 0, 3, 0, 0x3c, 2, 2, 3, 4, 3})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 2 {
			return
		}
		algo := balancer.Algorithm(in[0] % 5)
		zone := ""
		if in[1]&1 == 1 {
			zone = "z0"
		}
		candidates := make([]bulwark.Endpoint, 8)
		for i := range candidates {
			candidates[i] = bulwark.Endpoint{Addr: fmt.Sprintf("10.0.0.%d:80", i), Zone: fmt.Sprintf("z%d", i%3), Weight: i % 4}
		}
		// Two judges: a checker's verdicts and an outlier detector's.
		health, ejection := &judge{}, &judge{}
		lb, err := balancer.New(balancer.Config{Algorithm: algo, Zone: zone, Followers: []balancer.Follower{health, ejection}})
		if err != nil {
			t.Fatal(err)
		}
		defer lb.Close()
		health.lb, ejection.lb = lb, lb
		type model struct{ unhealthy, ejected bool }
		set := map[string]*model{}
		var held []balancer.Pick
		in = in[2:]
		next := func() byte {
			if len(in) == 0 {
				return 0
			}
			b := in[0]
			in = in[1:]
			return b
		}
		for len(in) > 0 {
			switch op := next(); op % 5 {
			case 0: // Update to the subset in the next byte
				mask := next()
				var eps []bulwark.Endpoint
				nextSet := map[string]*model{}
				for i, ep := range candidates {
					if mask&(1<<i) != 0 {
						eps = append(eps, ep)
						if m := set[ep.Addr]; m != nil {
							nextSet[ep.Addr] = m
						} else {
							nextSet[ep.Addr] = &model{}
						}
					}
				}
				if err := lb.Update(eps); err != nil {
					t.Fatalf("Update(%v) = %v", eps, err)
				}
				set = nextSet
			case 1, 2: // health or ejection of one candidate
				b := next()
				ep := candidates[b%8]
				if op%5 == 1 {
					health.set(ep, b&8 == 0)
					if m := set[ep.Addr]; m != nil {
						m.unhealthy = b&8 != 0
					}
				} else {
					ejection.set(ep, b&8 == 0)
					if m := set[ep.Addr]; m != nil {
						m.ejected = b&8 != 0
					}
				}
			case 3, 4: // pick, and finish at once or later
				pk, err := lb.Pick(fmt.Sprint(next()), nil)
				eligible := 0
				for _, m := range set {
					if !m.unhealthy && !m.ejected {
						eligible++
					}
				}
				switch {
				case len(set) == 0:
					if !errors.Is(err, balancer.ErrNoEndpoints) {
						t.Fatalf("Pick on an empty set = %v, want ErrNoEndpoints", err)
					}
					continue
				case err != nil:
					t.Fatalf("Pick with %d endpoints = %v", len(set), err)
				}
				m := set[pk.Endpoint().Addr]
				if m == nil {
					t.Fatalf("Pick = %v, not in the set", pk.Endpoint())
				}
				panicking := float64(eligible) < 0.5*float64(len(set))
				if !panicking && (m.unhealthy || m.ejected) {
					t.Fatalf("Pick = %v (unhealthy %v, ejected %v) with %d of %d eligible", pk.Endpoint(), m.unhealthy, m.ejected, eligible, len(set))
				}
				if op%5 == 3 {
					pk.Done(balancer.Outcome{})
				} else {
					held = append(held, pk)
				}
			}
		}
		for i := range held {
			held[i].Done(balancer.Outcome{})
		}
	})
}
