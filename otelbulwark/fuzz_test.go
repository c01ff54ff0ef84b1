package otelbulwark_test

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
)

// FuzzObserve feeds arbitrary event sequences and checks the invariants the
// dashboards rely on: counters match the events, in flight is unsampled
// picks minus calls per endpoint, each component or endpoint is in exactly
// one state on its state gauge, and the limit gauge holds the limit of the
// last limit change of each component.
func FuzzObserve(f *testing.F) {
	f.Add([]byte{8, 3, 0, 0, 1, 3, 0, 0})
	f.Add([]byte{1, 3, 0, 0}) // a call with no pick, on an endpoint with no address
	f.Add([]byte{3, 0, 1, 1, 3, 0, 1, 2, 3, 0, 1, 0, 9, 3, 2, 0, 10, 3, 2, 0})
	f.Add([]byte{8, 3, 1, 5, 8, 3, 1, 0, 1, 3, 1, 0, 12, 4, 2, 0, 13, 4, 2, 0, 10, 4, 2, 0})
	f.Add([]byte{3, 4, 3, 1, 3, 4, 3, 2, 10, 4, 3, 0, 3, 4, 3, 0})
	f.Add([]byte{8, 3, 1, 0, 8, 3, 2, 3, 1, 3, 1, 0, 8, 3, 1, 0})    // a sampled pick stops in flight
	f.Add([]byte{21, 8, 0, 7, 21, 8, 1, 3, 21, 9, 0, 2, 2, 8, 0, 0}) // limit changes, and a rejection
	components := []string{"breaker", "retry", "hedge", "balancer", "healthcheck", "outlier", "idempotency", "custom",
		"limiter", "bulkhead", "ratelimit", "throttle", "timeout", "fallback", "discovery"}
	states := []string{"closed", "open", "half-open", ""}
	eps := []bulwark.Endpoint{{}, {Addr: "a:1", Zone: "z1"}, {Addr: "b:1"}, {Addr: "c:1", Zone: "z2"}}

	f.Fuzz(func(t *testing.T, data []byte) {
		o, r := newObserver(t)
		calls := map[string]int64{}    // family prefix → calls
		picks := int64(0)              // weighted balancer picks
		inflight := map[string]int64{} // balancer endpoint → picks − calls, until a sampled pick
		sampled := false               // a sampled balancer pick was seen
		limits := map[string]int64{}   // family prefix and component → the last limit changed to
		for len(data) >= 4 {
			e := bulwark.Event{
				Kind:      bulwark.EventKind(data[0] % 24), // includes unknown kinds
				Component: components[int(data[1])%len(components)],
				Name:      "n",
				Endpoint:  eps[int(data[2])%len(eps)],
				From:      states[int(data[3])%len(states)],
				To:        states[int(data[3]/4)%len(states)],
				Weight:    int(data[3] % 4),
				Limit:     int(data[3] % 4),
				Outcome:   bulwark.Outcome(data[3]%3 + 1),
				Latency:   time.Duration(data[3]) * time.Millisecond,
				Reason:    states[int(data[2])%len(states)],
			}
			data = data[4:]
			o.Observe(e)
			fam := familyName(e.Component)
			switch e.Kind {
			case bulwark.EventCall:
				calls[fam]++
				if e.Component == "balancer" && !sampled {
					inflight[e.Endpoint.Addr]--
				}
			case bulwark.EventLimitChanged:
				limits[fam+".limit{"+e.Component+"}"] = int64(e.Limit)
			case bulwark.EventPick:
				if e.Component == "balancer" {
					picks += int64(max(e.Weight, 1))
					sampled = sampled || e.Weight > 1
					if !sampled {
						inflight[e.Endpoint.Addr]++
					}
				}
			}
		}
		got := collect(t, r)
		for fam, want := range calls {
			var n int64
			for _, p := range got[fam+".calls"] {
				n += p.value
			}
			if n != want {
				t.Errorf("%s.calls total = %d, want %d", fam, n, want)
			}
		}
		var n int64
		for _, p := range got["bulwark.balancer.picks"] {
			n += p.value
		}
		if n != picks {
			t.Errorf("bulwark.balancer.picks total = %d, want %d", n, picks)
		}
		gotInflight := map[string]int64{}
		for attrs, p := range got["bulwark.balancer.inflight"] {
			gotInflight[endpointOf(attrs)] += p.value
		}
		for ep, want := range inflight {
			if gotInflight[ep] != want {
				t.Errorf("bulwark.balancer.inflight{endpoint %q} = %d, want %d", ep, gotInflight[ep], want)
			}
		}
		gotLimits := map[string]int64{}
		for metric, pts := range got {
			if !strings.HasSuffix(metric, ".limit") {
				continue
			}
			for attrs, p := range pts {
				gotLimits[metric+"{"+attrValue(attrs, "bulwark.component")+"}"] = p.value
			}
		}
		if !maps.Equal(limits, gotLimits) {
			t.Errorf("limit gauges = %v, want %v", gotLimits, limits)
		}
		for metric, pts := range got {
			if !strings.HasSuffix(metric, ".state") {
				continue
			}
			ones := map[string]int{}
			for attrs, p := range pts {
				group := withoutAttr(attrs, "bulwark.state")
				if p.value != 0 && p.value != 1 {
					t.Errorf("%s{%s} = %d, want 0 or 1", metric, attrs, p.value)
				}
				ones[group] += int(p.value)
			}
			for group, n := range ones {
				if n != 1 {
					t.Errorf("%s{%s} is in %d states, want 1", metric, group, n)
				}
			}
		}
	})
}

func familyName(component string) string {
	switch component {
	case "breaker":
		return "bulwark.breaker"
	case "retry", "hedge":
		return "bulwark.retry"
	case "balancer":
		return "bulwark.balancer"
	case "healthcheck", "outlier":
		return "bulwark.healthcheck"
	case "idempotency":
		return "bulwark.idempotency"
	case "limiter", "bulkhead":
		return "bulwark.limit"
	case "ratelimit", "throttle", "timeout", "fallback", "discovery":
		return "bulwark." + component
	}
	return "bulwark"
}

// endpointOf rebuilds the Endpoint.Addr that server.address and server.port
// came from.
func endpointOf(attrs string) string {
	if port := attrValue(attrs, "server.port"); port != "" {
		return attrValue(attrs, "server.address") + ":" + port
	}
	return attrValue(attrs, "server.address")
}

func attrValue(attrs, key string) string {
	for _, kv := range splitAttrs(attrs) {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

func withoutAttr(attrs, key string) string {
	var keep []string
	for _, kv := range splitAttrs(attrs) {
		if !strings.HasPrefix(kv, key+"=") {
			keep = append(keep, kv)
		}
	}
	return strings.Join(keep, ",")
}
