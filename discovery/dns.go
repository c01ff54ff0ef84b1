package discovery

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/bulwark-go/bulwark"
)

var _ Resolver = (*DNS)(nil)

// DNSConfig configures a DNS resolver. Only Name is required, and Port
// unless SRV is set.
type DNSConfig struct {
	// Name is the name to look up: a host name such as "api.internal" for
	// A and AAAA records, or an SRV name such as "_http._tcp.api.internal".
	// It is absolute, with or without the final dot: the search domains of
	// resolv.conf are not applied. An IP address is returned as it is,
	// without a query.
	Name string
	// SRV, if true, looks up the SRV records of Name and the addresses of
	// their targets; the records' ports are the endpoints' ports. If false,
	// the A and AAAA records of Name are looked up and Port is their port.
	SRV bool
	// Port is the port of the endpoints of an A/AAAA lookup, 1 to 65535.
	// It must be zero with SRV.
	Port int
	// Network selects the address families: "ip4" (A records only), "ip6"
	// (AAAA only) or "ip" (both). If empty, "ip".
	Network string
	// Zone is the Zone of every endpoint found. Empty means unknown.
	Zone string
	// Servers are the DNS servers to ask, in order, as IP addresses with an
	// optional port ("10.0.0.2", "10.0.0.2:53", "[fd00::2]:5353"); the next
	// one is asked when one does not answer within Timeout, fails
	// (SERVFAIL, REFUSED, …) or sends a malformed answer. If empty, the nameservers of
	// /etc/resolv.conf, read again at each resolution (127.0.0.1 and ::1
	// if it names none).
	Servers []string
	// Timeout bounds the exchange with one server, UDP and TCP included.
	// It is wall-clock time, as it bounds network I/O. If zero, 2s.
	Timeout time.Duration
	// MinTTL and MaxTTL bound the TTL that Resolve reports, so that a
	// record with a TTL of 0 is not asked for again at once and one with a
	// TTL of a day is still looked up now and then. If zero, 5s and 5m.
	MinTTL, MaxTTL time.Duration
}

// DNS is a Resolver that looks up A and AAAA or SRV records with the
// package's own stub resolver: it asks the configured servers directly,
// over UDP with EDNS0, and again over TCP when the answer is truncated, and
// reports the records' TTL, which net.Resolver does not.
//
// Resolve returns the endpoints sorted by Addr, and as ttl the smallest TTL
// of the records that led to them (the SRV record set, CNAMEs on the way,
// the addresses), bounded by MinTTL and MaxTTL; an IP address as Name
// reports MaxTTL, an empty answer MinTTL. Resolve returns an error wrapping
// ErrNotFound when Name does not exist (NXDOMAIN), and an empty answer with a
// nil error when it exists without records of the types asked (NODATA). Any
// other failure of a query, on every server, fails the whole resolution: a
// partial answer never shrinks the fleet.
//
// SRV records (RFC 2782) map to endpoints this way:
//   - Only the records of the lowest priority value are used. Those of
//     higher values are standby servers, used only when no record of a
//     lower value resolves to an address.
//   - Each address of a record's target becomes an endpoint with the
//     record's port, and the record's weight as its Weight; a weight of 0
//     becomes 1, the smallest share an Endpoint can have. Two records that
//     lead to the same address and port are merged, their weights added.
//   - A target's addresses come from the additional section when the server
//     put any there (as Consul and CoreDNS do), and from an A/AAAA lookup
//     otherwise. A target that does not exist or has no address is skipped;
//     a target whose lookup fails fails the resolution.
//   - A target of "." (no service) and a port of 0 are skipped.
//
// A DNS is safe for concurrent use by multiple goroutines.
type DNS struct {
	name       string // checked, no final dot
	literal    []bulwark.Endpoint
	srv        bool
	port       int
	qtypes     []uint16 // A, AAAA or both, in that order
	zone       string
	servers    []string // "host:port"; nil means resolv.conf
	resolvConf string   // the file read when servers is nil
	timeout    time.Duration
	minTTL     time.Duration
	maxTTL     time.Duration
}

// NewDNS returns a DNS resolver for cfg. It returns an error wrapping
// ErrInvalidConfig if cfg is invalid.
func NewDNS(cfg DNSConfig) (*DNS, error) {
	d := &DNS{
		srv:        cfg.SRV,
		port:       cfg.Port,
		zone:       cfg.Zone,
		resolvConf: "/etc/resolv.conf",
		timeout:    cfg.Timeout,
		minTTL:     cfg.MinTTL,
		maxTTL:     cfg.MaxTTL,
	}
	invalid := func(format string, args ...any) (*DNS, error) {
		return nil, fmt.Errorf("%w: DNSConfig."+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case cfg.SRV && cfg.Port != 0:
		return invalid("Port %d with SRV: the SRV records give the ports", cfg.Port)
	case !cfg.SRV && (cfg.Port < 1 || cfg.Port > 65535):
		return invalid("Port %d: want 1 to 65535", cfg.Port)
	case cfg.Timeout < 0:
		return invalid("Timeout %v is negative", cfg.Timeout)
	case cfg.MinTTL < 0:
		return invalid("MinTTL %v is negative", cfg.MinTTL)
	case cfg.MaxTTL < 0:
		return invalid("MaxTTL %v is negative", cfg.MaxTTL)
	}
	if d.timeout == 0 {
		d.timeout = 2 * time.Second
	}
	if d.minTTL == 0 {
		d.minTTL = 5 * time.Second
	}
	if d.maxTTL == 0 {
		d.maxTTL = 5 * time.Minute
	}
	if d.minTTL > d.maxTTL {
		return invalid("MinTTL %v above MaxTTL %v", d.minTTL, d.maxTTL)
	}
	switch cfg.Network {
	case "", "ip":
		d.qtypes = []uint16{typeA, typeAAAA}
	case "ip4":
		d.qtypes = []uint16{typeA}
	case "ip6":
		d.qtypes = []uint16{typeAAAA}
	default:
		return invalid("Network %q: want \"ip\", \"ip4\" or \"ip6\"", cfg.Network)
	}
	name := strings.TrimSuffix(cfg.Name, ".")
	if ip, err := netip.ParseAddr(name); err == nil && !cfg.SRV {
		if !d.wants(ip) {
			return invalid("Name %q is not of Network %q", cfg.Name, cfg.Network)
		}
		d.literal = []bulwark.Endpoint{{Addr: net.JoinHostPort(ip.String(), strconv.Itoa(cfg.Port)), Zone: cfg.Zone}}
	} else if err := checkName(name); err != nil {
		return invalid("Name: %v", err)
	}
	d.name = strings.ToLower(name)
	for _, s := range cfg.Servers {
		addr, err := parseServer(s)
		if err != nil {
			return invalid("Servers: %v", err)
		}
		d.servers = append(d.servers, addr)
	}
	return d, nil
}

// parseServer returns s, an IP address with an optional port, as host:port.
func parseServer(s string) (string, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(ip, 53).String(), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return "", fmt.Errorf("server %q: want an IP address with an optional port", s)
	}
	return ap.String(), nil
}

// wants reports whether ip is of a family the resolver looks up.
func (d *DNS) wants(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.Is4() && slices.Contains(d.qtypes, typeA) || ip.Is6() && slices.Contains(d.qtypes, typeAAAA)
}

// Resolve looks Name up, as the type documentation says.
func (d *DNS) Resolve(ctx context.Context) ([]bulwark.Endpoint, time.Duration, error) {
	if d.literal != nil {
		return slices.Clone(d.literal), d.maxTTL, nil
	}
	servers := d.servers
	if servers == nil {
		servers = readResolvConf(d.resolvConf)
	}
	q := querier{d: d, servers: servers}
	var eps []bulwark.Endpoint
	var ttl uint32
	var err error
	if d.srv {
		eps, ttl, err = q.srv(ctx)
	} else {
		var addrs []record
		var found bool
		addrs, ttl, found, err = q.addrs(ctx, d.name)
		if err == nil && !found {
			err = fmt.Errorf("discovery: %s: %w", d.name, ErrNotFound)
		}
		for _, r := range addrs {
			eps = append(eps, bulwark.Endpoint{Addr: net.JoinHostPort(r.addr.String(), strconv.Itoa(d.port)), Zone: d.zone})
		}
	}
	if err != nil {
		return nil, 0, err
	}
	if len(eps) == 0 {
		// Nothing to keep: ask again soon, a fleet may be coming up.
		return nil, d.minTTL, nil
	}
	slices.SortFunc(eps, func(a, b bulwark.Endpoint) int { return strings.Compare(a.Addr, b.Addr) })
	eps = slices.CompactFunc(eps, func(a, b bulwark.Endpoint) bool { return a.Addr == b.Addr })
	return eps, min(max(time.Duration(ttl)*time.Second, d.minTTL), d.maxTTL), nil
}

// querier is one resolution: the servers it asks.
type querier struct {
	d       *DNS
	servers []string
}

// noTTL is the TTL of an answer without records: the smallest TTL of
// nothing, which MaxTTL then bounds.
const noTTL = math.MaxUint32

// addrs looks up the A and/or AAAA records of name, following CNAMEs. found
// is false when every lookup said NXDOMAIN.
func (q querier) addrs(ctx context.Context, name string) (addrs []record, ttl uint32, found bool, err error) {
	ttl = noTTL
	for _, qt := range q.d.qtypes {
		rs, t, ok, err := q.lookup(ctx, name, qt)
		if err != nil {
			return nil, 0, false, err
		}
		found = found || ok
		ttl = min(ttl, t)
		addrs = append(addrs, rs...)
	}
	return addrs, ttl, found, nil
}

// srv looks up the SRV records of the name and resolves their targets.
func (q querier) srv(ctx context.Context) ([]bulwark.Endpoint, uint32, error) {
	recs, ttl, found, msg, err := q.lookupMsg(ctx, q.d.name, typeSRV)
	if err != nil {
		return nil, 0, err
	}
	if !found {
		return nil, 0, fmt.Errorf("discovery: %s: %w", q.d.name, ErrNotFound)
	}
	recs = slices.DeleteFunc(recs, func(r record) bool { return r.target == "" || r.port == 0 })
	slices.SortStableFunc(recs, func(a, b record) int { return int(a.priority) - int(b.priority) })
	for len(recs) > 0 {
		n := 1
		for n < len(recs) && recs[n].priority == recs[0].priority {
			n++
		}
		eps, t, err := q.targets(ctx, recs[:n], msg.extra)
		if err != nil {
			return nil, 0, err
		}
		if len(eps) > 0 {
			return eps, min(ttl, t), nil
		}
		recs = recs[n:]
	}
	return nil, ttl, nil
}

// targets resolves the targets of recs, records of one priority, to
// endpoints, preferring the addresses in extra. The lookups run concurrently.
func (q querier) targets(ctx context.Context, recs []record, extra []record) ([]bulwark.Endpoint, uint32, error) {
	type result struct {
		addrs []record
		ttl   uint32
	}
	results := map[string]*result{}
	var todo []string
	for _, r := range recs {
		if _, ok := results[r.target]; ok {
			continue
		}
		if glue, ttl := q.glue(r.target, extra); len(glue) > 0 {
			results[r.target] = &result{addrs: glue, ttl: ttl}
			continue
		}
		if err := checkName(r.target); err != nil {
			return nil, 0, fmt.Errorf("discovery: SRV target of %s: %w", q.d.name, err)
		}
		results[r.target] = &result{}
		todo = append(todo, r.target)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, target := range todo {
		res := results[target]
		g.Go(func() error {
			var err error
			res.addrs, res.ttl, _, err = q.addrs(gctx, target)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	weights := map[string]int{}
	var eps []bulwark.Endpoint
	ttl := uint32(noTTL)
	for _, r := range recs {
		res := results[r.target]
		if len(res.addrs) == 0 {
			continue
		}
		ttl = min(ttl, r.ttl, res.ttl)
		for _, a := range res.addrs {
			addr := net.JoinHostPort(a.addr.String(), strconv.Itoa(int(r.port)))
			if _, ok := weights[addr]; !ok {
				eps = append(eps, bulwark.Endpoint{Addr: addr, Zone: q.d.zone})
			}
			weights[addr] += max(int(r.weight), 1)
		}
	}
	for i := range eps {
		eps[i].Weight = weights[eps[i].Addr]
	}
	return eps, ttl, nil
}

// glue returns the addresses of target in the additional section, of the
// families the resolver looks up, and their smallest TTL.
func (q querier) glue(target string, extra []record) ([]record, uint32) {
	var out []record
	ttl := uint32(noTTL)
	for _, r := range extra {
		if r.name == target && r.class == classIN && slices.Contains(q.d.qtypes, r.typ) {
			out = append(out, r)
			ttl = min(ttl, r.ttl)
		}
	}
	return out, ttl
}

// lookup asks for the qtype records of name and returns those of the name
// the CNAME chain in the answer leads to. found is false for NXDOMAIN.
func (q querier) lookup(ctx context.Context, name string, qtype uint16) (recs []record, ttl uint32, found bool, err error) {
	recs, ttl, found, _, err = q.lookupMsg(ctx, name, qtype)
	return recs, ttl, found, err
}

// maxCNAMEs bounds a CNAME chain.
const maxCNAMEs = 8

func (q querier) lookupMsg(ctx context.Context, name string, qtype uint16) ([]record, uint32, bool, *message, error) {
	m, err := q.exchange(ctx, name, qtype)
	if err != nil {
		return nil, 0, false, nil, err
	}
	if m.rcode == rcodeNXDomain {
		return nil, noTTL, false, m, nil
	}
	ttl := uint32(noTTL)
	owner := name
	for range maxCNAMEs + 1 {
		var recs []record
		var cname *record
		for i, r := range m.answers {
			if r.name != owner || r.class != classIN {
				continue
			}
			switch r.typ {
			case qtype:
				recs = append(recs, r)
			case typeCNAME:
				cname = &m.answers[i]
			}
		}
		if len(recs) > 0 {
			for _, r := range recs {
				ttl = min(ttl, r.ttl)
			}
			return recs, ttl, true, m, nil
		}
		if cname == nil || cname.target == "" {
			return nil, ttl, true, m, nil // NODATA
		}
		ttl = min(ttl, cname.ttl)
		owner = cname.target
	}
	return nil, 0, false, nil, fmt.Errorf("discovery: %s %s: CNAME chain longer than %d", name, typeName(qtype), maxCNAMEs)
}

// exchange asks the servers in turn for name and qtype, and returns the first
// answer that is NOERROR or NXDOMAIN.
func (q querier) exchange(ctx context.Context, name string, qtype uint16) (*message, error) {
	var errs []error
	for _, s := range q.servers {
		m, err := q.d.exchange(ctx, s, name, qtype)
		if err == nil && m.rcode != rcodeSuccess && m.rcode != rcodeNXDomain {
			err = fmt.Errorf("server answered %s", rcodeName(m.rcode))
		}
		if err == nil {
			return m, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", s, err))
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("discovery: lookup %s %s: no DNS server", name, typeName(qtype))
	}
	return nil, fmt.Errorf("discovery: lookup %s %s: %w", name, typeName(qtype), errors.Join(errs...))
}

// exchange sends one query to server, over UDP and then over TCP if the
// answer is truncated.
func (d *DNS) exchange(ctx context.Context, server, name string, qtype uint16) (*message, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	var idb [2]byte
	_, _ = rand.Read(idb[:]) // crypto/rand.Read never fails
	id := binary.BigEndian.Uint16(idb[:])
	query := buildQuery(id, name, qtype)
	m, err := exchangeUDP(ctx, server, query, id, name, qtype)
	if err == nil && m.truncated {
		m, err = exchangeTCP(ctx, server, query, id, name, qtype)
	}
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("%w: %w", ctx.Err(), err)
	}
	return m, err
}

// matches reports whether m answers the query id for name and qtype.
func matches(m *message, id uint16, name string, qtype uint16) bool {
	return m.response && m.id == id && m.opcode == 0 && m.qname == name && m.qtype == qtype && m.qclass == classIN
}

func exchangeUDP(ctx context.Context, server string, query []byte, id uint16, name string, qtype uint16) (*message, error) {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "udp", server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := conn.Write(query); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		// Anything that is not the answer to this query (a late answer
		// to an earlier one, a spoofing attempt, garbage) is ignored, and
		// the wait goes on.
		m, err := parseMessage(buf[:n])
		if err == nil && matches(m, id, name, qtype) {
			return m, nil
		}
		if err != nil && n >= 4 && binary.BigEndian.Uint16(buf) == id && buf[2]&0x80 != 0 {
			return nil, err // our answer, and malformed: the next server may do better
		}
	}
}

func exchangeTCP(ctx context.Context, server string, query []byte, id uint16, name string, qtype uint16) (*message, error) {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := conn.Write(binary.BigEndian.AppendUint16(nil, uint16(len(query)))); err != nil {
		return nil, err
	}
	if _, err := conn.Write(query); err != nil {
		return nil, err
	}
	r := bufio.NewReader(conn)
	var lb [2]byte
	if _, err := io.ReadFull(r, lb[:]); err != nil {
		return nil, fmt.Errorf("reading the TCP answer: %w", err)
	}
	buf := make([]byte, binary.BigEndian.Uint16(lb[:]))
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("reading the TCP answer: %w", err)
	}
	m, err := parseMessage(buf)
	if err != nil {
		return nil, err
	}
	if !matches(m, id, name, qtype) || m.truncated {
		return nil, fmt.Errorf("%w: the TCP answer does not match the query", errMalformed)
	}
	return m, nil
}

// readResolvConf returns the nameservers of the resolv.conf file at path, as
// host:port; 127.0.0.1 and ::1 when it names none or cannot be read, as the
// C library does.
func readResolvConf(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return defaultServers()
	}
	defer f.Close()
	if s := parseResolvConf(f); len(s) > 0 {
		return s
	}
	return defaultServers()
}

func defaultServers() []string { return []string{"127.0.0.1:53", "[::1]:53"} }

// parseResolvConf returns the nameserver addresses of a resolv.conf, as
// host:port, skipping the lines it cannot read.
func parseResolvConf(r io.Reader) []string {
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		ip, err := netip.ParseAddr(f[1])
		if err != nil {
			continue
		}
		out = append(out, netip.AddrPortFrom(ip, 53).String())
	}
	return out
}
