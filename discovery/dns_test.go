package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/discovery"
)

func newDNS(t testing.TB, cfg discovery.DNSConfig) *discovery.DNS {
	t.Helper()
	d, err := discovery.NewDNS(cfg)
	require.NoError(t, err)
	return d
}

func resolve(t testing.TB, r discovery.Resolver) ([]bulwark.Endpoint, time.Duration) {
	t.Helper()
	eps, ttl, err := r.Resolve(context.Background())
	require.NoError(t, err)
	return eps, ttl
}

// addrs returns the Addr of each endpoint, with its weight when it has one.
func addrs(eps []bulwark.Endpoint) string {
	var s []string
	for _, ep := range eps {
		if ep.Weight != 0 {
			s = append(s, fmt.Sprintf("%s*%d", ep.Addr, ep.Weight))
		} else {
			s = append(s, ep.Addr)
		}
	}
	return strings.Join(s, " ")
}

func TestDNSResolvesAAndAAAA(t *testing.T) {
	ns := startDNSServer(t)
	ns.set("api.internal", a("10.0.0.2", 60), a("10.0.0.1", 30), aaaa("fd00::1", 45))
	d := newDNS(t, discovery.DNSConfig{Name: "API.internal.", Port: 8080, Zone: "eu-1a", Servers: []string{ns.addr}})

	eps, ttl := resolve(t, d)
	if got, want := addrs(eps), "10.0.0.1:8080 10.0.0.2:8080 [fd00::1]:8080"; got != want {
		t.Errorf("Resolve() = %s, want %s", got, want)
	}
	for _, ep := range eps {
		if ep.Zone != "eu-1a" {
			t.Errorf("Resolve(): %v has zone %q, want eu-1a", ep, ep.Zone)
		}
	}
	if ttl != 30*time.Second {
		t.Errorf("Resolve() ttl = %v, want 30s, the smallest record TTL", ttl)
	}
}

func TestDNSNetworkAsksOnlyItsFamily(t *testing.T) {
	ns := startDNSServer(t)
	ns.set("api", a("10.0.0.1", 30), aaaa("fd00::1", 30))
	for _, tc := range []struct {
		network string
		want    string
		asked   []uint16
	}{
		{"ip4", "10.0.0.1:80", []uint16{tA}},
		{"ip6", "[fd00::1]:80", []uint16{tAAAA}},
		{"ip", "10.0.0.1:80 [fd00::1]:80", []uint16{tA, tAAAA}},
		{"", "10.0.0.1:80 [fd00::1]:80", []uint16{tA, tAAAA}},
	} {
		t.Run(tc.network, func(t *testing.T) {
			ns.queries()
			eps, _ := resolve(t, newDNS(t, discovery.DNSConfig{Name: "api", Port: 80, Network: tc.network, Servers: []string{ns.addr}}))
			if got := addrs(eps); got != tc.want {
				t.Errorf("Resolve() = %s, want %s", got, tc.want)
			}
			var asked []uint16
			for _, q := range ns.queries() {
				asked = append(asked, q.qtype)
			}
			if !slices.Equal(asked, tc.asked) {
				t.Errorf("types asked = %v, want %v", asked, tc.asked)
			}
		})
	}
}

func TestDNSTTLIsBounded(t *testing.T) {
	ns := startDNSServer(t)
	for _, tc := range []struct {
		name           string
		recordTTL      uint32
		minTTL, maxTTL time.Duration
		want           time.Duration
	}{
		{"zero is raised to MinTTL", 0, 0, 0, 5 * time.Second},
		{"short is raised to MinTTL", 1, 0, 0, 5 * time.Second},
		{"within bounds is kept", 42, 0, 0, 42 * time.Second},
		{"a day is cut to MaxTTL", 86400, 0, 0, 5 * time.Minute},
		{"own MinTTL", 2, time.Second, 0, 2 * time.Second},
		{"own MaxTTL", 600, 0, 10 * time.Minute, 10 * time.Minute},
		{"top bit set reads as zero", 1 << 31, 3 * time.Second, 0, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns.set("api", a("10.0.0.1", tc.recordTTL))
			_, ttl := resolve(t, newDNS(t, discovery.DNSConfig{Name: "api", Port: 80, MinTTL: tc.minTTL, MaxTTL: tc.maxTTL, Servers: []string{ns.addr}}))
			if ttl != tc.want {
				t.Errorf("record TTL %d: Resolve() ttl = %v, want %v", tc.recordTTL, ttl, tc.want)
			}
		})
	}
}

func TestDNSFollowsCNAMEs(t *testing.T) {
	ns := startDNSServer(t)
	ns.set("api", cname("api.eu", 20))
	ns.set("api.eu", cname("lb.eu", 300))
	ns.set("lb.eu", a("10.0.0.1", 60), a("10.0.0.2", 60))
	eps, ttl := resolve(t, newDNS(t, discovery.DNSConfig{Name: "api", Port: 80, Network: "ip4", Servers: []string{ns.addr}}))
	if got, want := addrs(eps), "10.0.0.1:80 10.0.0.2:80"; got != want {
		t.Errorf("Resolve() = %s, want %s", got, want)
	}
	if ttl != 20*time.Second {
		t.Errorf("Resolve() ttl = %v, want 20s, the first CNAME's", ttl)
	}
}

func TestDNSNotFoundAndNoData(t *testing.T) {
	ns := startDNSServer(t)
	ns.set("v4only", a("10.0.0.1", 30))

	_, _, err := newDNS(t, discovery.DNSConfig{Name: "missing", Port: 80, Servers: []string{ns.addr}}).Resolve(context.Background())
	if !errors.Is(err, discovery.ErrNotFound) {
		t.Errorf("Resolve(missing) error = %v, want ErrNotFound", err)
	}
	_, _, err = newDNS(t, discovery.DNSConfig{Name: "_http._tcp.missing", SRV: true, Servers: []string{ns.addr}}).Resolve(context.Background())
	if !errors.Is(err, discovery.ErrNotFound) {
		t.Errorf("Resolve(SRV missing) error = %v, want ErrNotFound", err)
	}
	eps, ttl := resolve(t, newDNS(t, discovery.DNSConfig{Name: "v4only", Port: 80, Network: "ip6", Servers: []string{ns.addr}}))
	if len(eps) != 0 || ttl != 5*time.Second {
		t.Errorf("Resolve(AAAA of v4only) = %v, %v; want no endpoints, MinTTL", eps, ttl)
	}
}

func TestDNSSRV(t *testing.T) {
	for _, glue := range []bool{false, true} {
		t.Run(fmt.Sprintf("glue=%v", glue), func(t *testing.T) {
			ns := startDNSServer(t)
			ns.setFlag(&ns.glue, glue)
			ns.set("_http._tcp.api",
				srv(10, 60, 8080, "a.api", 120),
				srv(10, 0, 8081, "b.api", 90),
				srv(10, 20, 8080, "c.api", 300),   // same address and port as a.api's: merged
				srv(10, 5, 9090, ".", 120),        // no service here
				srv(10, 5, 0, "d.api", 120),       // port 0
				srv(10, 5, 8080, "gone.api", 120), // NXDOMAIN: skipped
				srv(20, 100, 8080, "standby.api", 120),
			)
			ns.set("a.api", a("10.0.0.1", 100), aaaa("fd00::1", 100))
			ns.set("b.api", a("10.0.0.2", 200))
			ns.set("c.api", a("10.0.0.1", 200))
			ns.set("d.api", a("10.0.0.4", 200))
			ns.set("standby.api", a("10.0.0.9", 200))

			eps, ttl := resolve(t, newDNS(t, discovery.DNSConfig{Name: "_http._tcp.api", SRV: true, Zone: "z", Servers: []string{ns.addr}}))
			want := "10.0.0.1:8080*80 10.0.0.2:8081*1 [fd00::1]:8080*60"
			if got := addrs(eps); got != want {
				t.Errorf("Resolve() = %s, want %s", got, want)
			}
			if ttl != 90*time.Second {
				t.Errorf("Resolve() ttl = %v, want 90s, the smallest TTL of the records read", ttl)
			}
			var targetQueries []string
			for _, q := range ns.queries() {
				if q.qtype != tSRV && q.name != "gone.api" {
					targetQueries = append(targetQueries, q.name)
				}
			}
			if glue && len(targetQueries) > 0 {
				t.Errorf("with glue, asked for %v; want no lookups of targets with glue", targetQueries)
			}
			if !glue && !slices.Contains(targetQueries, "a.api") {
				t.Errorf("without glue, asked for %v; want a.api among them", targetQueries)
			}
			if slices.Contains(targetQueries, "standby.api") {
				t.Errorf("asked for standby.api, of a higher priority value, while priority 10 had addresses")
			}
		})
	}
}

func TestDNSSRVFallsBackToTheNextPriority(t *testing.T) {
	ns := startDNSServer(t)
	ns.set("_http._tcp.api",
		srv(1, 10, 80, "gone.api", 60),
		srv(2, 10, 80, "standby.api", 60),
		srv(3, 10, 80, "last.api", 60),
	)
	ns.set("standby.api", a("10.0.0.9", 60))
	ns.set("last.api", a("10.0.0.10", 60))
	eps, _ := resolve(t, newDNS(t, discovery.DNSConfig{Name: "_http._tcp.api", SRV: true, Network: "ip4", Servers: []string{ns.addr}}))
	if got, want := addrs(eps), "10.0.0.9:80*10"; got != want {
		t.Errorf("Resolve() = %s, want %s (the first priority with an address)", got, want)
	}
}

func TestDNSSRVTargetFailureFailsTheResolution(t *testing.T) {
	ns := startDNSServer(t)
	ns.set("_http._tcp.api", srv(1, 10, 80, "a.api", 60), srv(1, 10, 80, "b.api", 60))
	ns.set("a.api", a("10.0.0.1", 60))
	ns.set("b.api", a("10.0.0.2", 60))
	ns.fail("b.api", rcServFail)
	eps, _, err := newDNS(t, discovery.DNSConfig{Name: "_http._tcp.api", SRV: true, Servers: []string{ns.addr}}).Resolve(context.Background())
	if err == nil || !strings.Contains(err.Error(), "SERVFAIL") {
		t.Errorf("Resolve() = %s, %v; want a SERVFAIL error, not half the fleet", addrs(eps), err)
	}
}

func TestDNSServerFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inject func(*dnsServer)
		want   string
	}{
		{"SERVFAIL", func(s *dnsServer) { s.fail("api", rcServFail) }, "SERVFAIL"},
		{"REFUSED", func(s *dnsServer) { s.fail("api", rcRefused) }, "REFUSED"},
		{"malformed", func(s *dnsServer) { s.setFlag(&s.garbage, true) }, "malformed"},
		{"no answer", func(s *dnsServer) { s.setFlag(&s.drop, true) }, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad, good := startDNSServer(t), startDNSServer(t)
			bad.set("api", a("10.0.0.66", 60))
			good.set("api", a("10.0.0.1", 60))
			tc.inject(bad)

			alone := newDNS(t, discovery.DNSConfig{Name: "api", Port: 80, Network: "ip4", Servers: []string{bad.addr}, Timeout: 300 * time.Millisecond})
			eps, _, err := alone.Resolve(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Resolve() from the failing server = %s, %v; want an error with %q", addrs(eps), err, tc.want)
			}
			both := newDNS(t, discovery.DNSConfig{Name: "api", Port: 80, Network: "ip4", Servers: []string{bad.addr, good.addr}, Timeout: 300 * time.Millisecond})
			eps, _ = resolve(t, both)
			if got, want := addrs(eps), "10.0.0.1:80"; got != want {
				t.Errorf("Resolve() with a second server = %s, want %s", got, want)
			}
		})
	}
}

func TestDNSIgnoresAnswersToOtherQueries(t *testing.T) {
	ns := startDNSServer(t)
	ns.set("api", a("10.0.0.1", 60))
	ns.setFlag(&ns.spoof, true)
	eps, _ := resolve(t, newDNS(t, discovery.DNSConfig{Name: "api", Port: 80, Network: "ip4", Servers: []string{ns.addr}}))
	if got, want := addrs(eps), "10.0.0.1:80"; got != want {
		t.Errorf("Resolve() = %s, want %s: an answer with another ID was taken", got, want)
	}
}

func TestDNSTruncatedAnswerRetriesOverTCP(t *testing.T) {
	ns := startDNSServer(t)
	var rrs []rr
	var want []string
	for i := range 200 { // 200 A records: 3 kB, over the 1232 bytes of UDP
		rrs = append(rrs, a(fmt.Sprintf("10.0.%d.%d", i/100, i%100+1), 60))
		want = append(want, fmt.Sprintf("10.0.%d.%d:80", i/100, i%100+1))
	}
	ns.set("big", rrs...)
	eps, _ := resolve(t, newDNS(t, discovery.DNSConfig{Name: "big", Port: 80, Network: "ip4", Servers: []string{ns.addr}}))
	slices.Sort(want)
	if got := addrs(eps); got != strings.Join(want, " ") {
		t.Errorf("Resolve() = %d endpoints %s…, want 200", len(eps), got[:min(len(got), 60)])
	}
	var protos []string
	for _, q := range ns.queries() {
		protos = append(protos, map[bool]string{false: "udp", true: "tcp"}[q.tcp])
	}
	if !slices.Equal(protos, []string{"udp", "tcp"}) {
		t.Errorf("queries went over %v, want [udp tcp]", protos)
	}
}

func TestDNSIPLiteral(t *testing.T) {
	eps, ttl := resolve(t, newDNS(t, discovery.DNSConfig{Name: "fd00::7", Port: 443, MaxTTL: time.Hour}))
	if got, want := addrs(eps), "[fd00::7]:443"; got != want {
		t.Errorf("Resolve() = %s, want %s", got, want)
	}
	if ttl != time.Hour {
		t.Errorf("Resolve() ttl = %v, want MaxTTL", ttl)
	}
}

func TestDNSHonoursContext(t *testing.T) {
	ns := startDNSServer(t)
	ns.set("api", a("10.0.0.1", 60))
	ns.setFlag(&ns.drop, true)
	seen := ns.watch()
	d := newDNS(t, discovery.DNSConfig{Name: "api", Port: 80, Servers: []string{ns.addr}, Timeout: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := d.Resolve(ctx)
		done <- err
	}()
	// Once the query reached the server, cancel: the exchange must end
	// although its own Timeout is an hour away.
	select {
	case <-seen:
	case err := <-done:
		t.Fatalf("Resolve() = %v before the query was sent", err)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Resolve() after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Resolve() still running 10s after its context was canceled")
	}
}

func TestNewDNSRejectsBadConfig(t *testing.T) {
	long := strings.Repeat("a", 64)
	for _, tc := range []struct {
		name string
		cfg  discovery.DNSConfig
		want string
	}{
		{"no name", discovery.DNSConfig{Port: 80}, "empty name"},
		{"empty label", discovery.DNSConfig{Name: "api..internal", Port: 80}, "empty label"},
		{"long label", discovery.DNSConfig{Name: long + ".internal", Port: 80}, "longer than 63"},
		{"long name", discovery.DNSConfig{Name: strings.Repeat("abcdefg.", 32) + "com", Port: 80}, "longer than 253"},
		{"bad character", discovery.DNSConfig{Name: "api internal", Port: 80}, "character"},
		{"no port", discovery.DNSConfig{Name: "api"}, "Port 0"},
		{"port too large", discovery.DNSConfig{Name: "api", Port: 65536}, "Port 65536"},
		{"port with SRV", discovery.DNSConfig{Name: "_x._tcp.api", SRV: true, Port: 80}, "with SRV"},
		{"network", discovery.DNSConfig{Name: "api", Port: 80, Network: "tcp"}, "Network"},
		{"literal of another family", discovery.DNSConfig{Name: "10.0.0.1", Port: 80, Network: "ip6"}, "not of Network"},
		{"server name", discovery.DNSConfig{Name: "api", Port: 80, Servers: []string{"dns.internal"}}, "server"},
		{"server port 0", discovery.DNSConfig{Name: "api", Port: 80, Servers: []string{"10.0.0.1:0"}}, "server"},
		{"negative timeout", discovery.DNSConfig{Name: "api", Port: 80, Timeout: -1}, "Timeout"},
		{"MinTTL above MaxTTL", discovery.DNSConfig{Name: "api", Port: 80, MinTTL: time.Hour}, "above MaxTTL"},
		{"negative MaxTTL", discovery.DNSConfig{Name: "api", Port: 80, MaxTTL: -1}, "MaxTTL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := discovery.NewDNS(tc.cfg)
			if !errors.Is(err, discovery.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewDNS(%+v) error = %v, want ErrInvalidConfig with %q", tc.cfg, err, tc.want)
			}
		})
	}
}

func TestDNSConcurrentSafe(t *testing.T) {
	ns := startDNSServer(t)
	ns.set("_http._tcp.api", srv(1, 10, 80, "a.api", 60), srv(1, 10, 80, "b.api", 60))
	ns.set("a.api", a("10.0.0.1", 60))
	ns.set("b.api", a("10.0.0.2", 60))
	d := newDNS(t, discovery.DNSConfig{Name: "_http._tcp.api", SRV: true, Network: "ip4", Servers: []string{ns.addr}})
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for range 20 {
				eps, _, err := d.Resolve(context.Background())
				if err == nil && addrs(eps) != "10.0.0.1:80*10 10.0.0.2:80*10" {
					err = fmt.Errorf("Resolve() = %s", addrs(eps))
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
