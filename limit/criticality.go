package limit

import (
	"context"
	"strconv"
	"strings"
)

// Criticality is how much a call matters when there is not enough capacity
// for all of them: under overload the least critical calls are shed first.
// The zero value is Normal, so that a call that says nothing is Normal.
//
// Calls carry a Criticality in their context ([WithCriticality]; the
// middleware sets it from rules ([Rule]) or a trusted header). A Limiter
// keeps Headroom (a tenth by default, rounded down) of its limit free of
// Normal calls and twice that free of Sheddable ones, so that under
// overload the sheddable calls are refused first and the critical ones
// still find room; the limit grows to keep the callee busy all the same
// (see [Config].Headroom). A Bulkhead's queue serves the most critical
// waiter first and, when full, evicts a less critical one (see
// [BulkheadConfig].MaxQueue).
type Criticality int8

const (
	// Sheddable calls (batch jobs, reports, prefetches) are the first to
	// go: they may use the limit up to (1 − 2×Headroom) of it.
	Sheddable Criticality = -1
	// Normal is the default: calls may use the limit up to (1 − Headroom)
	// of it.
	Normal Criticality = 0
	// Critical calls (what a user waits for) may use the whole limit, and
	// in a Bulkhead's queue they are served before the others.
	Critical Criticality = 1
)

// String returns "sheddable", "normal" or "critical", the values that
// ParseCriticality reads and the middleware writes in its header.
func (c Criticality) String() string {
	switch c {
	case Sheddable:
		return "sheddable"
	case Normal:
		return "normal"
	case Critical:
		return "critical"
	}
	return "criticality(" + strconv.Itoa(int(c)) + ")"
}

// valid reports whether c is one of the three levels.
func (c Criticality) valid() bool { return c >= Sheddable && c <= Critical }

// level is c's index in per-level arrays: 0 for Sheddable, 2 for Critical.
func (c Criticality) level() int { return int(c - Sheddable) }

const numLevels = 3

// ParseCriticality reads a criticality as String writes it, ignoring case
// and surrounding spaces. It reports false for anything else, empty
// included.
func ParseCriticality(s string) (Criticality, bool) {
	s = strings.TrimSpace(s)
	switch {
	case strings.EqualFold(s, "critical"):
		return Critical, true
	case strings.EqualFold(s, "normal"):
		return Normal, true
	case strings.EqualFold(s, "sheddable"):
		return Sheddable, true
	}
	return Normal, false
}

// callInfo is what a context carries for the limiters: one value, so that
// Acquire makes one lookup.
type callInfo struct {
	crit   Criticality
	tenant string
}

type callInfoKey struct{}

// WithCriticality returns a copy of ctx whose calls have criticality c, for
// every Limiter and Bulkhead they pass through. It keeps the tenant that ctx
// carries. A c that is not one of the three levels is taken as Normal.
func WithCriticality(ctx context.Context, c Criticality) context.Context {
	if !c.valid() {
		c = Normal
	}
	info := infoFrom(ctx)
	info.crit = c
	return context.WithValue(ctx, callInfoKey{}, &info)
}

// WithTenant returns a copy of ctx whose calls are counted for tenant, so
// that no tenant holds more than its share of a limit (see
// [Config].TenantShare and [BulkheadConfig].TenantShare): its excess is
// refused with [ReasonTenant], which the middleware answers with 429 (the
// tenant should slow down) rather than 503 (the service is overloaded). It
// keeps the criticality that ctx carries. An empty tenant means none.
func WithTenant(ctx context.Context, tenant string) context.Context {
	info := infoFrom(ctx)
	info.tenant = tenant
	return context.WithValue(ctx, callInfoKey{}, &info)
}

// CriticalityFrom returns the criticality that ctx carries, Normal if none.
func CriticalityFrom(ctx context.Context) Criticality { return infoFrom(ctx).crit }

// TenantFrom returns the tenant that ctx carries, "" if none.
func TenantFrom(ctx context.Context) string { return infoFrom(ctx).tenant }

func infoFrom(ctx context.Context) callInfo {
	if ctx == nil {
		return callInfo{}
	}
	if p, ok := ctx.Value(callInfoKey{}).(*callInfo); ok {
		return *p
	}
	return callInfo{}
}
