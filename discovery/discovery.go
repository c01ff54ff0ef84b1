package discovery

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/bulwark-go/bulwark"
)

var (
	// ErrNotFound is returned, wrapped, by DNS.Resolve when the name does
	// not exist (NXDOMAIN).
	ErrNotFound = errors.New("discovery: no such name")
	// ErrEmpty is the error a Watcher reports when a resolver returned no
	// endpoints and Config.AllowEmpty is false.
	ErrEmpty = errors.New("discovery: no endpoints")
	// ErrInvalidConfig is wrapped by the errors of New and NewDNS.
	ErrInvalidConfig = errors.New("discovery: invalid config")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("discovery: already started")
	// ErrClosed is returned by Start and Refresh after Close.
	ErrClosed = errors.New("discovery: closed")
)

// Resolver finds the current endpoints of one service. It is the seam through
// which any source of membership feeds a Watcher: DNS and Static here,
// Kubernetes EndpointSlices or the Consul catalog in the caller's code.
//
// Resolve returns the endpoints and ttl, how long the answer may be used
// before asking again; a ttl of zero or less means the resolver does not
// know, and the Watcher waits its Interval. A resolver that learns of
// changes by push (a Kubernetes informer, a Consul blocking query) returns
// its current view at once and a short ttl, or blocks until the view changes
// or ctx ends. An error means the answer is unknown, never that the service
// has no endpoints: the Watcher then keeps the last good answer. Resolve
// must be safe for concurrent use.
type Resolver interface {
	Resolve(ctx context.Context) (eps []bulwark.Endpoint, ttl time.Duration, err error)
}

// ResolverFunc adapts a function to a Resolver.
type ResolverFunc func(ctx context.Context) ([]bulwark.Endpoint, time.Duration, error)

// Resolve calls f(ctx).
func (f ResolverFunc) Resolve(ctx context.Context) ([]bulwark.Endpoint, time.Duration, error) {
	return f(ctx)
}

// Static is a Resolver of a fixed list of endpoints: Resolve returns a copy
// of it and a ttl of zero.
type Static []bulwark.Endpoint

var (
	_ Resolver = Static(nil)
	_ Resolver = ResolverFunc(nil)
)

// Resolve returns a copy of s.
func (s Static) Resolve(context.Context) ([]bulwark.Endpoint, time.Duration, error) {
	return slices.Clone(s), 0, nil
}

// Updater is what a Watcher feeds: *balancer.Balancer is one. Update
// replaces the whole endpoint set with eps, or returns an error and changes
// nothing. A Watcher calls it from one goroutine at a time (its own, or one
// in Refresh), with eps sorted by Addr and owned by the Updater from then on;
// Update must not call the Watcher's Refresh, which would wait for it.
type Updater interface {
	Update(eps []bulwark.Endpoint) error
}
