package balancer_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/balancer"
	"github.com/bulwark-go/bulwark/consistenthash"
	"github.com/bulwark-go/bulwark/retry"
)

// TestPickSkipsTried: picks that share a Tried go to a different endpoint
// each time while one is left, then to a tried one rather than failing.
func TestPickSkipsTried(t *testing.T) {
	eps := endpoints(5)
	for _, a := range benchAlgorithms {
		t.Run(a.name, func(t *testing.T) {
			lb := mustNew(t, balancer.Config{Algorithm: a.algo, Endpoints: eps})
			for k := range 200 {
				key := fmt.Sprint("key-", k)
				var tried balancer.Tried
				seen := map[string]bool{}
				for i := range len(eps) {
					pk, err := lb.Pick(key, &tried)
					if err != nil {
						t.Fatal(err)
					}
					if seen[pk.Endpoint().Addr] {
						t.Fatalf("Pick(%q) %d with %d tried = %s again", key, i+1, i, pk.Endpoint().Addr)
					}
					seen[pk.Endpoint().Addr] = true
					pk.Done(balancer.Outcome{Err: errors.New("boom")})
				}
				pk, err := lb.Pick(key, &tried)
				if err != nil {
					t.Fatalf("Pick(%q) with every endpoint tried = %v, want one of them", key, err)
				}
				pk.Done(balancer.Outcome{})
			}
		})
	}
}

// TestPickSkipsTriedButNotForIneligible: a tried endpoint is still picked
// rather than one that no judge allows.
func TestPickSkipsTriedButNotForIneligible(t *testing.T) {
	eps := endpoints(3)
	lb, j := judged(t, balancer.Config{Algorithm: balancer.LeastRequest, Endpoints: eps, PanicThreshold: -1})
	j.set(eps[2], false)
	var tried balancer.Tried
	first, err := lb.Pick("", &tried)
	if err != nil {
		t.Fatal(err)
	}
	first.Done(balancer.Outcome{})
	second, _ := lb.Pick("", &tried)
	second.Done(balancer.Outcome{})
	third, _ := lb.Pick("", &tried)
	third.Done(balancer.Outcome{})
	if second.Endpoint() == first.Endpoint() || second.Endpoint() == eps[2] || third.Endpoint() == eps[2] {
		t.Errorf("picks %v, %v, %v with %v down: want two distinct eligible ones, then a tried one",
			first.Endpoint(), second.Endpoint(), third.Endpoint(), eps[2])
	}
}

// TestRetryReachesTheKeysNextOwner: retry.Policy.Do over a consistent-hash
// balancer, with one Tried for the call, sends the first attempt to the
// key's owner and the retry to its second owner, as an independent ring
// over the same endpoints orders them.
func TestRetryReachesTheKeysNextOwner(t *testing.T) {
	eps := endpoints(8)
	lb := mustNew(t, balancer.Config{Algorithm: balancer.ConsistentHash, Endpoints: eps, VirtualNodes: 160})
	nodes := make([]consistenthash.Node, len(eps))
	for i, ep := range eps {
		nodes[i] = consistenthash.Node{Name: ep.Addr}
	}
	ring, err := consistenthash.NewRing(consistenthash.RingConfig{VirtualNodes: 160, Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	policy, err := retry.New(retry.Config{MaxAttempts: 2, Delay: func(int, time.Duration, error) time.Duration { return 0 }})
	if err != nil {
		t.Fatal(err)
	}
	for k := range 100 {
		key := fmt.Sprint("customer-", k)
		own := ring.Owners(key)
		owner, _, _ := own.Next()
		next, _, _ := own.Next()

		var tried balancer.Tried
		var got []string
		err := policy.Do(context.Background(), func(context.Context) error {
			pk, err := lb.Pick(key, &tried)
			if err != nil {
				return err
			}
			got = append(got, pk.Endpoint().Addr)
			err = fmt.Errorf("%s: connection refused", pk.Endpoint().Addr)
			if len(got) == 2 {
				err = nil
			}
			pk.Done(balancer.Outcome{Err: err, Gateway: err != nil})
			return err
		})
		if err != nil || len(got) != 2 || got[0] != owner || got[1] != next {
			t.Fatalf("Do for %q = %v after attempts on %v, want nil after [%s %s] (owner, then next owner)", key, err, got, owner, next)
		}
	}
}
