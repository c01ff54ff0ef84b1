package proxy

import (
	"context"
	"encoding/binary"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/discovery"
)

// srvServer is a DNS server on loopback UDP that answers one SRV name with
// the loopback ports it is given, each target's address in the additional
// section, as Consul and CoreDNS do; every other name is NXDOMAIN. Written
// from RFC 1035 and RFC 2782, just large enough for these tests.
type srvServer struct {
	name string // the SRV name, lower case, no final dot
	ttl  uint32
	conn net.PacketConn
	done chan struct{}

	mu    sync.Mutex
	ports []int // the answer: one SRV record per port, target 127.0.0.1
}

func startSRVServer(t *testing.T, name string, ttl uint32) *srvServer {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &srvServer{name: name, ttl: ttl, conn: conn, done: make(chan struct{})}
	go s.serve()
	t.Cleanup(func() {
		conn.Close()
		<-s.done
	})
	return s
}

func (s *srvServer) addr() string { return s.conn.LocalAddr().String() }

// set makes the server answer with the ports of addrs ("127.0.0.1:port").
func (s *srvServer) set(t *testing.T, addrs ...string) {
	t.Helper()
	var ports []int
	for _, a := range addrs {
		_, port, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(port)
		ports = append(ports, n)
	}
	s.mu.Lock()
	s.ports = ports
	s.mu.Unlock()
}

func (s *srvServer) serve() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp, ok := s.answer(buf[:n]); ok {
			_, _ = s.conn.WriteTo(resp, from)
		}
	}
}

// answer returns the response to query q, or false for a message it ignores.
func (s *srvServer) answer(q []byte) ([]byte, bool) {
	if len(q) < 12 || q[2]&0x80 != 0 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil, false
	}
	// The question: labels up to the root, then type and class.
	var labels []string
	off := 12
	for off < len(q) && q[off] != 0 {
		l := int(q[off])
		if l > 63 || off+1+l > len(q) {
			return nil, false
		}
		labels = append(labels, string(q[off+1:off+1+l]))
		off += 1 + l
	}
	off++
	if off+4 > len(q) {
		return nil, false
	}
	qtype := binary.BigEndian.Uint16(q[off:])
	question := q[12 : off+4]

	resp := binary.BigEndian.AppendUint16(nil, binary.BigEndian.Uint16(q)) // ID
	s.mu.Lock()
	ports := s.ports
	s.mu.Unlock()
	const typeSRV, typeA, classIN = 33, 1, 1
	if !strings.EqualFold(strings.Join(labels, "."), s.name) {
		resp = binary.BigEndian.AppendUint16(resp, 0x8403) // QR, AA, NXDOMAIN
		resp = append(resp, 0, 1, 0, 0, 0, 0, 0, 0)
		return append(resp, question...), true
	}
	n := uint16(len(ports))
	if qtype != typeSRV {
		n = 0 // NODATA
	}
	resp = binary.BigEndian.AppendUint16(resp, 0x8400) // QR, AA, NOERROR
	resp = append(resp, 0, 1)
	resp = binary.BigEndian.AppendUint16(resp, n) // answers
	resp = append(resp, 0, 0)
	resp = binary.BigEndian.AppendUint16(resp, n) // additional: the targets' addresses
	resp = append(resp, question...)
	target := func(b []byte, i int) []byte { // "t<i>.<name>", uncompressed
		b = append(b, byte(len("t"+strconv.Itoa(i))))
		b = append(b, "t"+strconv.Itoa(i)...)
		for _, l := range labels {
			b = append(b, byte(len(l)))
			b = append(b, l...)
		}
		return append(b, 0)
	}
	for i := range int(n) {
		resp = append(resp, 0xC0, 12) // the question's name
		resp = binary.BigEndian.AppendUint16(resp, typeSRV)
		resp = binary.BigEndian.AppendUint16(resp, classIN)
		resp = binary.BigEndian.AppendUint32(resp, s.ttl)
		rdata := []byte{0, 10, 0, 1} // priority 10, weight 1
		rdata = binary.BigEndian.AppendUint16(rdata, uint16(ports[i]))
		rdata = target(rdata, i)
		resp = binary.BigEndian.AppendUint16(resp, uint16(len(rdata)))
		resp = append(resp, rdata...)
	}
	for i := range int(n) {
		resp = target(resp, i)
		resp = binary.BigEndian.AppendUint16(resp, typeA)
		resp = binary.BigEndian.AppendUint16(resp, classIN)
		resp = binary.BigEndian.AppendUint32(resp, s.ttl)
		resp = append(resp, 0, 4, 127, 0, 0, 1)
	}
	return resp, true
}

func TestDNSChangeMovesTrafficWithinOneRefresh(t *testing.T) {
	olds := []*backend{newBackend(t, "old1", 0), newBackend(t, "old2", 0)}
	news := []*backend{newBackend(t, "new1", 0), newBackend(t, "new2", 0)}
	const ttl = 10 * time.Second
	dns := startSRVServer(t, "_http._tcp.fleet.test", uint32(ttl/time.Second))
	dns.set(t, olds[0].addr, olds[1].addr)
	resolver, err := discovery.NewDNS(discovery.DNSConfig{Name: "_http._tcp.fleet.test", SRV: true, Servers: []string{dns.addr()}})
	if err != nil {
		t.Fatal(err)
	}
	clk := bulwarktest.NewClock(time.Time{})
	ev := events{ch: make(chan bulwark.Event, 1024)}
	p, err := New(Config{Resolver: resolver, Clock: clk, Observer: ev, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := p.Start(ctx); err != nil { // resolves once before it returns
		t.Fatal(err)
	}
	defer p.Close()
	front := httptest.NewServer(p.Handler())
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()

	// served sends n GETs and returns the backends that answered them.
	served := func(n int) map[string]int {
		t.Helper()
		got := map[string]int{}
		for range n {
			code, body, err := get(client, front.URL+"/item")
			if err != nil || code != http.StatusOK {
				t.Fatalf("GET = %d, %v", code, err)
			}
			got[body]++
		}
		return got
	}
	if got := served(20); got["old1"]+got["old2"] != 20 {
		t.Fatalf("before the DNS change, GETs went to %v; want old1 and old2 only", got)
	}

	// The answer changes; the proxy keeps the old one until its TTL runs
	// out, then resolves again, and the traffic moves.
	dns.set(t, news[0].addr, news[1].addr)
	clk.Advance(ttl - time.Second)
	if got := served(20); got["old1"]+got["old2"] != 20 {
		t.Fatalf("before the TTL ran out, GETs went to %v; want old1 and old2 only", got)
	}
	clk.Advance(time.Second)
	// Wait, without moving the clock, for the new backends' first checks,
	// which follow the new set at once.
	ev.waitHealthy(t, clk, 0, news...)
	if got := served(40); got["new1"]+got["new2"] != 40 || got["new1"] == 0 || got["new2"] == 0 {
		t.Fatalf("after one refresh, GETs went to %v; want new1 and new2 only, both", got)
	}
}
