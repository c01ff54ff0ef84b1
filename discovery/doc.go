// Package discovery keeps a fleet's endpoint set up to date from a source of
// membership: a [Watcher] asks a [Resolver] for the endpoints, again when the
// answer's TTL runs out, and passes each change to an [Updater] — a
// *balancer.Balancer — in one Update call. Use it when the servers of a
// dependency come and go: DNS names of a Kubernetes headless service,
// Consul's DNS interface, any SRV record.
//
//	dns, err := discovery.NewDNS(discovery.DNSConfig{Name: "_http._tcp.api.internal", SRV: true})
//	w, err := discovery.New(discovery.Config{Resolver: dns, Updater: lb}) // lb is a *balancer.Balancer
//	err = w.Refresh(ctx) // optional: the endpoints before the first request
//	err = w.Start(ctx)
//	defer w.Close()
//
// Resolvers: [Static] is a fixed list. [DNS] looks up A/AAAA or SRV records
// with its own small stub resolver, pointed at the servers of
// [DNSConfig].Servers or of /etc/resolv.conf, so that it can honour the
// records' TTLs (within MinTTL and MaxTTL), retry a truncated answer over TCP,
// and map SRV priorities and weights to endpoints (see [DNS]). Any other
// source — Kubernetes EndpointSlices, the Consul catalog, a file — plugs in
// by implementing the one-method [Resolver] interface, or with
// [ResolverFunc]; the Watcher does not care where the endpoints come from.
//
// A Watcher never makes the fleet worse because the source failed: on an
// error, an invalid answer or, unless [Config].AllowEmpty, an empty one, the
// Updater keeps the last set it accepted, the failure goes to the Observer,
// and the Watcher asks again after a backoff. Time is read from
// [Config].Clock, so tests advance a bulwarktest.Clock instead of sleeping.
//
// Conventions, as in every bulwark package: [New] and [NewDNS] never start a
// goroutine, and their errors wrap [ErrInvalidConfig]; [Watcher.Start] starts
// the background resolutions ([ErrStarted] on a second call, [ErrClosed]
// after Close), [Watcher.Close] stops them and waits, and [Watcher.Refresh]
// resolves once on the caller's goroutine. The events that go to
// [Config].Observer (a resolution's EventCall, endpoints added and removed,
// the Watcher's state) are listed on [Watcher].
package discovery
