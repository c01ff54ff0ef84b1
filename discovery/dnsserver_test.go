package discovery_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

// dnsServer is a small authoritative-and-recursive DNS server on loopback,
// UDP and TCP on the same port, written here from RFC 1035 so that the
// package's client is tested against an encoder it does not share. Its
// answers can be changed while it runs, and failures injected per name.
type dnsServer struct {
	addr string // "127.0.0.1:port", UDP and TCP
	udp  net.PacketConn
	tcp  net.Listener
	wg   sync.WaitGroup

	mu      sync.Mutex
	records map[string][]rr // by lower-case name without the final dot
	rcodes  map[string]int  // an rcode to answer for a name instead of its records
	drop    bool            // answer nothing over UDP
	glue    bool            // put SRV targets' addresses in the additional section
	spoof   bool            // send a wrong answer with another ID before the real one
	garbage bool            // answer with a malformed message carrying the query's ID
	log     []query
	seen    chan struct{} // if not nil, signalled (without blocking) at each query
}

// query is one question the server answered (or dropped).
type query struct {
	name  string
	qtype uint16
	tcp   bool
}

// rr is a record of the server's zone.
type rr struct {
	typ                    uint16
	ttl                    uint32
	ip                     netip.Addr
	target                 string // CNAME or SRV target; "." for none
	priority, weight, port uint16
}

const (
	tA     uint16 = 1
	tCNAME uint16 = 5
	tAAAA  uint16 = 28
	tSRV   uint16 = 33
	tOPT   uint16 = 41

	rcServFail = 2
	rcNXDomain = 3
	rcRefused  = 5
)

func a(ip string, ttl uint32) rr { return rr{typ: tA, ttl: ttl, ip: netip.MustParseAddr(ip)} }
func aaaa(ip string, ttl uint32) rr {
	return rr{typ: tAAAA, ttl: ttl, ip: netip.MustParseAddr(ip)}
}
func cname(target string, ttl uint32) rr { return rr{typ: tCNAME, ttl: ttl, target: target} }
func srv(priority, weight, port uint16, target string, ttl uint32) rr {
	return rr{typ: tSRV, ttl: ttl, priority: priority, weight: weight, port: port, target: target}
}

// startDNSServer starts a server on a free loopback port; it stops when the
// test ends.
func startDNSServer(t testing.TB) *dnsServer {
	t.Helper()
	s, err := newDNSServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	return s
}

// newDNSServer starts a server on a free loopback port; close stops it.
func newDNSServer() (*dnsServer, error) {
	s := &dnsServer{records: map[string][]rr{}, rcodes: map[string]int{}}
	var err error
	// The UDP port is taken first, then TCP on the same port; another
	// process may hold that TCP port, so try a few times.
	for range 20 {
		if s.udp, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
			return nil, err
		}
		s.addr = s.udp.LocalAddr().String()
		if s.tcp, err = net.Listen("tcp4", s.addr); err == nil {
			break
		}
		s.udp.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("no loopback port free for UDP and TCP: %w", err)
	}
	s.wg.Add(2)
	go s.serveUDP()
	go s.serveTCP()
	return s, nil
}

func (s *dnsServer) close() {
	s.udp.Close()
	s.tcp.Close()
	s.wg.Wait()
}

// set replaces the records of name.
func (s *dnsServer) set(name string, rrs ...rr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[strings.ToLower(name)] = rrs
}

// fail makes the server answer rcode for name; 0 undoes it.
func (s *dnsServer) fail(name string, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rcode == 0 {
		delete(s.rcodes, name)
		return
	}
	s.rcodes[name] = rcode
}

func (s *dnsServer) setFlag(flag *bool, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*flag = on
}

// watch returns a channel signalled when a query arrives.
func (s *dnsServer) watch() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = make(chan struct{}, 1)
	return s.seen
}

// queries returns the questions asked so far, and forgets them.
func (s *dnsServer) queries() []query {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.log
	s.log = nil
	return q
}

func (s *dnsServer) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := s.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		for _, out := range s.handle(buf[:n], false) {
			s.udp.WriteTo(out, from)
		}
	}
}

func (s *dnsServer) serveTCP() {
	defer s.wg.Done()
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer c.Close()
			for {
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				q := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, q); err != nil {
					return
				}
				for _, out := range s.handle(q, true) {
					c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(out))))
					c.Write(out)
				}
			}
		}()
	}
}

// handle returns the messages to send back for query q.
func (s *dnsServer) handle(q []byte, tcp bool) [][]byte {
	id, name, qtype, size, err := parseQuery(q)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = append(s.log, query{name: name, qtype: qtype, tcp: tcp})
	if s.seen != nil {
		select {
		case s.seen <- struct{}{}:
		default:
		}
	}
	if s.drop && !tcp {
		return nil
	}
	if s.garbage {
		return [][]byte{{byte(id >> 8), byte(id), 0x80, 0, 0, 1}}
	}
	var out [][]byte
	if s.spoof && !tcp {
		// Another ID, a wrong address: accepted, it would show.
		w := header(id^0x5555, 0, false, 1, 1, 0)
		w = appendName(w, name)
		w = binary.BigEndian.AppendUint16(w, qtype)
		w = binary.BigEndian.AppendUint16(w, 1)
		w = append(w, 0xC0, 12)
		w = binary.BigEndian.AppendUint16(w, tA)
		w = binary.BigEndian.AppendUint16(w, 1)
		w = binary.BigEndian.AppendUint32(w, 60)
		w = append(w, 0, 4, 6, 6, 6, 6)
		out = append(out, w)
	}
	resp := s.answer(id, name, qtype)
	limit := 512
	if size > 512 {
		limit = size
	}
	if !tcp && len(resp) > limit {
		resp = truncated(id, name, qtype)
	}
	return append(out, resp)
}

// parseQuery reads the ID, the question and the EDNS0 payload size of q.
func parseQuery(q []byte) (id uint16, name string, qtype uint16, size int, err error) {
	if len(q) < 12 {
		return 0, "", 0, 0, errors.New("short")
	}
	id = binary.BigEndian.Uint16(q)
	off := 12
	var labels []string
	for {
		if off >= len(q) {
			return 0, "", 0, 0, errors.New("short name")
		}
		l := int(q[off])
		off++
		if l == 0 {
			break
		}
		if l > 63 || off+l > len(q) {
			return 0, "", 0, 0, errors.New("bad label")
		}
		labels = append(labels, strings.ToLower(string(q[off:off+l])))
		off += l
	}
	if off+4 > len(q) {
		return 0, "", 0, 0, errors.New("short question")
	}
	qtype = binary.BigEndian.Uint16(q[off:])
	off += 4
	if binary.BigEndian.Uint16(q[10:]) == 1 && off+11 <= len(q) && q[off] == 0 &&
		binary.BigEndian.Uint16(q[off+1:]) == tOPT {
		size = int(binary.BigEndian.Uint16(q[off+3:]))
	}
	return id, strings.Join(labels, "."), qtype, size, nil
}

// owned is a record with its owner name.
type owned struct {
	name string
	r    rr
}

// answer builds the full answer to a question, as a recursive server would:
// CNAMEs followed, an injected rcode, NXDOMAIN for a name without records.
func (s *dnsServer) answer(id uint16, name string, qtype uint16) []byte {
	var ans, extra []owned
	rcode := 0
	owner := name
	for range 10 {
		if rc, ok := s.rcodes[owner]; ok {
			rcode = rc
			break
		}
		rrs, ok := s.records[owner]
		if !ok {
			rcode = rcNXDomain
			break
		}
		var next string
		for _, r := range rrs {
			if r.typ == tCNAME && qtype != tCNAME {
				next = r.target
				ans = append(ans, owned{owner, r})
			}
		}
		if next == "" {
			for _, r := range rrs {
				if r.typ == qtype {
					ans = append(ans, owned{owner, r})
				}
			}
			break
		}
		owner = next
	}
	if rcode == 0 && qtype == tSRV && s.glue {
		for _, x := range ans {
			if x.r.typ != tSRV {
				continue
			}
			for _, r := range s.records[x.r.target] {
				if r.typ == tA || r.typ == tAAAA {
					extra = append(extra, owned{x.r.target, r})
				}
			}
		}
	}
	if rcode != 0 && rcode != rcNXDomain {
		ans, extra = nil, nil
	}

	m := header(id, rcode, false, 1, len(ans), len(extra)+1)
	// Whole names written so far, for compression pointers.
	offsets := map[string]int{}
	writeName := func(n string) {
		if off, ok := offsets[n]; ok {
			m = binary.BigEndian.AppendUint16(m, 0xC000|uint16(off))
			return
		}
		if n != "" && n != "." {
			offsets[n] = len(m)
			for l := range strings.SplitSeq(n, ".") {
				m = append(m, byte(len(l)))
				m = append(m, l...)
			}
		}
		m = append(m, 0)
	}
	writeName(name)
	m = binary.BigEndian.AppendUint16(m, qtype)
	m = binary.BigEndian.AppendUint16(m, 1)
	writeRR := func(owner string, r rr) {
		writeName(owner)
		m = binary.BigEndian.AppendUint16(m, r.typ)
		m = binary.BigEndian.AppendUint16(m, 1)
		m = binary.BigEndian.AppendUint32(m, r.ttl)
		lenAt := len(m)
		m = append(m, 0, 0)
		switch r.typ {
		case tA:
			ip := r.ip.As4()
			m = append(m, ip[:]...)
		case tAAAA:
			ip := r.ip.As16()
			m = append(m, ip[:]...)
		case tCNAME:
			writeName(r.target)
		case tSRV:
			m = binary.BigEndian.AppendUint16(m, r.priority)
			m = binary.BigEndian.AppendUint16(m, r.weight)
			m = binary.BigEndian.AppendUint16(m, r.port)
			writeName(r.target)
		}
		binary.BigEndian.PutUint16(m[lenAt:], uint16(len(m)-lenAt-2))
	}
	for _, x := range ans {
		writeRR(x.name, x.r)
	}
	for _, x := range extra {
		writeRR(x.name, x.r)
	}
	// OPT: our payload size.
	m = append(m, 0)
	m = binary.BigEndian.AppendUint16(m, tOPT)
	m = binary.BigEndian.AppendUint16(m, 1232)
	m = binary.BigEndian.AppendUint32(m, 0)
	m = binary.BigEndian.AppendUint16(m, 0)
	return m
}

// truncated is the UDP answer to a question whose answer does not fit.
func truncated(id uint16, name string, qtype uint16) []byte {
	m := appendName(header(id, 0, true, 1, 0, 0), name)
	m = binary.BigEndian.AppendUint16(m, qtype)
	return binary.BigEndian.AppendUint16(m, 1)
}

func appendName(m []byte, name string) []byte {
	for l := range strings.SplitSeq(name, ".") {
		m = append(m, byte(len(l)))
		m = append(m, l...)
	}
	return append(m, 0)
}

func header(id uint16, rcode int, tc bool, qd, an, ar int) []byte {
	flags := uint16(1<<15 | 1<<10 | 1<<8 | 1<<7 | rcode) // QR, AA, RD, RA
	if tc {
		flags |= 1 << 9
	}
	m := binary.BigEndian.AppendUint16(nil, id)
	m = binary.BigEndian.AppendUint16(m, flags)
	m = binary.BigEndian.AppendUint16(m, uint16(qd))
	m = binary.BigEndian.AppendUint16(m, uint16(an))
	m = binary.BigEndian.AppendUint16(m, 0)
	return binary.BigEndian.AppendUint16(m, uint16(ar))
}
