package main

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/bulwark-go/bulwark"
)

// tally counts the components' events for the progress line and the report.
type tally struct {
	retries, giveUps, budget, rejections atomic.Int64
	ejections, unejections, replays      atomic.Int64
	conflicts, mismatches, claims        atomic.Int64
	takeovers, fenced                    atomic.Int64

	proxyRefused atomic.Int64 // requests the proxy refused itself, every backend at its limit

	mu          sync.Mutex        // guards the fields below
	refusals    map[string]int    // limiter refusals by "reason" and "crit:<criticality>", "rate" for the rate limit
	limitNow    map[string]int    // instance → its limiter's limit
	proxyLimit  map[string]int    // backend address → the limit of the proxy's limiter for it
	names       map[string]string // backend address → instance name
	picks       map[string]int64  // endpoint → estimated picks by the proxy
	transitions map[string]int    // "breaker payments closed→open" → count
	breakers    map[string]string // breaker name → current state
	health      map[string]string // endpoint → current health state
}

func newTally() *tally {
	return &tally{picks: map[string]int64{}, transitions: map[string]int{}, breakers: map[string]string{}, health: map[string]string{},
		refusals: map[string]int{}, limitNow: map[string]int{}, proxyLimit: map[string]int{}, names: map[string]string{}}
}

// proxyName is the proxy's name in the tour; its limiter of a backend is
// named proxyName/host:port.
const proxyName = "edge"

// name records the instance that serves at addr, for the report.
func (t *tally) name(addr, instance string) {
	t.mu.Lock()
	t.names[addr] = instance
	t.mu.Unlock()
}

func (t *tally) Observe(e bulwark.Event) {
	switch e.Kind {
	case bulwark.EventRetry:
		t.retries.Add(1)
	case bulwark.EventGiveUp:
		t.giveUps.Add(1)
	case bulwark.EventBudgetExhausted:
		t.budget.Add(1)
	case bulwark.EventRejected:
		t.rejections.Add(1)
		if e.Component == bulwark.ComponentBalancer && e.Reason == "limit" {
			t.proxyRefused.Add(1)
		}
		t.mu.Lock()
		switch e.Component {
		case bulwark.ComponentLimiter:
			t.refusals[e.Reason]++
			t.refusals["crit:"+e.To]++ // the instance puts the criticality there
		case "ratelimit":
			t.refusals["rate"]++
		}
		t.mu.Unlock()
	case bulwark.EventLimitChanged:
		t.mu.Lock()
		if addr, ok := strings.CutPrefix(e.Name, proxyName+"/"); ok {
			t.proxyLimit[addr] = e.Limit
		} else {
			t.limitNow[e.Name] = e.Limit
		}
		t.mu.Unlock()
	case bulwark.EventEjected:
		t.ejections.Add(1)
	case bulwark.EventUnejected:
		t.unejections.Add(1)
	case bulwark.EventReplayed:
		t.replays.Add(1)
	case bulwark.EventConflict:
		t.conflicts.Add(1)
	case bulwark.EventMismatch:
		t.mismatches.Add(1)
	case bulwark.EventClaimed:
		t.claims.Add(1)
	case bulwark.EventLeaseTakeover:
		t.takeovers.Add(1)
	case bulwark.EventStoreError:
		if e.Reason == "fenced" {
			t.fenced.Add(1)
		}
	case bulwark.EventPick:
		t.mu.Lock()
		t.picks[e.Endpoint.Addr] += int64(max(e.Weight, 1)) // Weight is the sampling weight
		t.mu.Unlock()
	case bulwark.EventStateChange:
		t.mu.Lock()
		switch e.Component {
		case bulwark.ComponentBreaker:
			t.transitions[e.Component+" "+e.Name+" "+e.From+"→"+e.To]++
			t.breakers[e.Name] = e.To
		case bulwark.ComponentHealthCheck:
			if e.Endpoint.Addr != "" {
				t.health[e.Endpoint.Addr] = e.To
			}
			t.transitions[e.Component+" "+e.From+"→"+e.To]++
		default:
			t.transitions[e.Component+" "+e.Name+" "+e.From+"→"+e.To]++
		}
		t.mu.Unlock()
	}
}

// open lists the breakers that are not closed.
func (t *tally) open() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for name, st := range t.breakers {
		if st != "closed" {
			out = append(out, name+":"+st)
		}
	}
	return out
}

func (t *tally) transitionCounts() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int, len(t.transitions))
	for k, v := range t.transitions {
		out[k] = v
	}
	return out
}

// takePicks returns the picks per endpoint since the last call.
func (t *tally) takePicks() map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.picks
	t.picks = map[string]int64{}
	return p
}

// limitStats is what the instances' limiters did, and the proxy's.
type limitStats struct {
	byReason map[string]int
	crit     string // refusals by criticality
	rate     int
	now      string // each instance's limit
	proxyNow string // the limit of the proxy's limiter of each backend, by instance name
}

func (t *tally) limits() limitStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := limitStats{byReason: map[string]int{}, rate: t.refusals["rate"]}
	for k, v := range t.refusals {
		l.byReason[k] = v
	}
	l.crit = fmt.Sprintf("critical %d, normal %d, sheddable %d", t.refusals["crit:critical"], t.refusals["crit:normal"], t.refusals["crit:sheddable"])
	var names []string
	for n := range t.limitNow {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %d", n, t.limitNow[n]))
	}
	l.now = strings.Join(parts, ", ")
	if l.now == "" {
		l.now = "unchanged"
	}
	parts = parts[:0]
	for addr, n := range t.proxyLimit {
		name := t.names[addr]
		if name == "" {
			name = addr
		}
		parts = append(parts, fmt.Sprintf("%s %d", name, n))
	}
	sort.Strings(parts)
	l.proxyNow = strings.Join(parts, ", ")
	if l.proxyNow == "" {
		l.proxyNow = "unchanged"
	}
	return l
}

// shed returns the requests that the instances' limiters and rate limits
// refused so far.
func (t *tally) shed() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.refusals["limit"] + t.refusals["tenant"] + t.refusals["rate"]
}
