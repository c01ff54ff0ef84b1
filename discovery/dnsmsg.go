package discovery

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// The DNS wire format (RFC 1035, RFC 2782 for SRV, RFC 6891 for EDNS0), as
// much of it as a stub resolver needs: a query with one question, and the
// answer and additional sections of a response. The package has no
// dependency for it; net.Resolver does not report TTLs.

const (
	typeA     uint16 = 1
	typeCNAME uint16 = 5
	typeAAAA  uint16 = 28
	typeSRV   uint16 = 33
	typeOPT   uint16 = 41
	classIN   uint16 = 1

	rcodeSuccess  = 0
	rcodeNXDomain = 3

	headerLen = 12
	// udpSize is the EDNS0 payload size we advertise, the size that avoids
	// IP fragmentation on every common path (DNS flag day 2020).
	udpSize = 1232
	// maxNameLen is the longest name on the wire, length octets included.
	maxNameLen = 255
)

var errMalformed = errors.New("malformed DNS message")

// typeName returns the mnemonic of the record types the package asks for.
func typeName(t uint16) string {
	switch t {
	case typeA:
		return "A"
	case typeAAAA:
		return "AAAA"
	case typeSRV:
		return "SRV"
	case typeCNAME:
		return "CNAME"
	}
	return fmt.Sprintf("TYPE%d", t)
}

// rcodeName returns the mnemonic of a response code.
func rcodeName(rc int) string {
	switch rc {
	case 0:
		return "NOERROR"
	case 1:
		return "FORMERR"
	case 2:
		return "SERVFAIL"
	case 3:
		return "NXDOMAIN"
	case 4:
		return "NOTIMP"
	case 5:
		return "REFUSED"
	}
	return fmt.Sprintf("RCODE%d", rc)
}

// checkName reports whether name, without a final dot, can be asked: labels
// of 1 to 63 letters, digits, hyphens and underscores, 255 octets at most on
// the wire.
func checkName(name string) error {
	if name == "" {
		return errors.New("empty name")
	}
	if len(name)+2 > maxNameLen {
		return fmt.Errorf("name %q longer than 253 characters", name)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" {
			return fmt.Errorf("name %q has an empty label", name)
		}
		if len(label) > 63 {
			return fmt.Errorf("name %q has a label longer than 63 characters", name)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("name %q has the character %q; want letters, digits, '-', '_' and '.'", name, c)
			}
		}
	}
	return nil
}

// appendName appends the uncompressed wire form of name, which checkName
// accepted.
func appendName(b []byte, name string) []byte {
	for label := range strings.SplitSeq(name, ".") {
		b = append(b, byte(len(label)))
		b = append(b, label...)
	}
	return append(b, 0)
}

// buildQuery returns a recursive query for name and qtype with an EDNS0 OPT
// record advertising udpSize.
func buildQuery(id uint16, name string, qtype uint16) []byte {
	b := make([]byte, headerLen, headerLen+len(name)+2+4+11)
	binary.BigEndian.PutUint16(b[0:], id)
	binary.BigEndian.PutUint16(b[2:], 1<<8) // RD
	binary.BigEndian.PutUint16(b[4:], 1)    // QDCOUNT
	binary.BigEndian.PutUint16(b[10:], 1)   // ARCOUNT: the OPT record
	b = appendName(b, name)
	b = binary.BigEndian.AppendUint16(b, qtype)
	b = binary.BigEndian.AppendUint16(b, classIN)
	// OPT: root name, type, payload size in the class, zero TTL and RDATA.
	b = append(b, 0)
	b = binary.BigEndian.AppendUint16(b, typeOPT)
	b = binary.BigEndian.AppendUint16(b, udpSize)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint16(b, 0)
	return b
}

// record is one resource record, its RDATA decoded for the types we use.
type record struct {
	name  string // lower case, no final dot
	typ   uint16
	class uint16
	ttl   uint32 // seconds; values with the top bit set read as 0 (RFC 2181)
	addr  netip.Addr
	// target is a CNAME's or SRV's target, lower case, no final dot; "" for
	// the root (an SRV "." means no service).
	target                 string
	priority, weight, port uint16
}

// message is a decoded DNS message.
type message struct {
	id        uint16
	response  bool
	opcode    int
	truncated bool
	rcode     int
	qname     string // lower case, no final dot
	qtype     uint16
	qclass    uint16
	answers   []record
	extra     []record // the additional section, OPT included
}

// parseMessage decodes b. It checks every length against b and never reads
// outside it; the authority section is skipped.
func parseMessage(b []byte) (*message, error) {
	if len(b) < headerLen {
		return nil, fmt.Errorf("%w: %d bytes, shorter than a header", errMalformed, len(b))
	}
	flags := binary.BigEndian.Uint16(b[2:])
	m := &message{
		id:        binary.BigEndian.Uint16(b[0:]),
		response:  flags&(1<<15) != 0,
		opcode:    int(flags>>11) & 0xF,
		truncated: flags&(1<<9) != 0,
		rcode:     int(flags & 0xF),
	}
	qd := int(binary.BigEndian.Uint16(b[4:]))
	an := int(binary.BigEndian.Uint16(b[6:]))
	ns := int(binary.BigEndian.Uint16(b[8:]))
	ar := int(binary.BigEndian.Uint16(b[10:]))
	if qd != 1 {
		return nil, fmt.Errorf("%w: %d questions, want 1", errMalformed, qd)
	}
	off := headerLen
	var err error
	if m.qname, off, err = readName(b, off); err != nil {
		return nil, err
	}
	if off+4 > len(b) {
		return nil, fmt.Errorf("%w: question cut short", errMalformed)
	}
	m.qtype = binary.BigEndian.Uint16(b[off:])
	m.qclass = binary.BigEndian.Uint16(b[off+2:])
	off += 4
	// A truncated UDP answer may end anywhere after the question: what is
	// there is not used, so it is not read.
	if m.truncated {
		return m, nil
	}
	// Each record takes at least 11 bytes, so the counts cannot make the
	// slices larger than the message.
	m.answers = make([]record, 0, min(an, (len(b)-off)/11))
	for range an {
		var r record
		if r, off, err = readRecord(b, off); err != nil {
			return nil, err
		}
		m.answers = append(m.answers, r)
	}
	for range ns {
		if _, off, err = readRecord(b, off); err != nil {
			return nil, err
		}
	}
	m.extra = make([]record, 0, min(ar, (len(b)-off)/11))
	for range ar {
		var r record
		if r, off, err = readRecord(b, off); err != nil {
			return nil, err
		}
		m.extra = append(m.extra, r)
	}
	return m, nil
}

// readRecord decodes the resource record at off and returns the offset after
// it.
func readRecord(b []byte, off int) (record, int, error) {
	var r record
	var err error
	if r.name, off, err = readName(b, off); err != nil {
		return r, 0, err
	}
	if off+10 > len(b) {
		return r, 0, fmt.Errorf("%w: record header cut short", errMalformed)
	}
	r.typ = binary.BigEndian.Uint16(b[off:])
	r.class = binary.BigEndian.Uint16(b[off+2:])
	r.ttl = binary.BigEndian.Uint32(b[off+4:])
	if r.ttl > 1<<31-1 {
		r.ttl = 0
	}
	n := int(binary.BigEndian.Uint16(b[off+8:]))
	off += 10
	end := off + n
	if end > len(b) {
		return r, 0, fmt.Errorf("%w: record data of %d bytes cut short", errMalformed, n)
	}
	if r.class != classIN && r.typ != typeOPT {
		return r, end, nil // not ours to decode
	}
	switch r.typ {
	case typeA:
		if n != 4 {
			return r, 0, fmt.Errorf("%w: A record of %d bytes", errMalformed, n)
		}
		r.addr = netip.AddrFrom4([4]byte(b[off:end]))
	case typeAAAA:
		if n != 16 {
			return r, 0, fmt.Errorf("%w: AAAA record of %d bytes", errMalformed, n)
		}
		r.addr = netip.AddrFrom16([16]byte(b[off:end]))
	case typeCNAME:
		if r.target, err = readNameIn(b, off, end); err != nil {
			return r, 0, err
		}
	case typeSRV:
		if n < 7 {
			return r, 0, fmt.Errorf("%w: SRV record of %d bytes", errMalformed, n)
		}
		r.priority = binary.BigEndian.Uint16(b[off:])
		r.weight = binary.BigEndian.Uint16(b[off+2:])
		r.port = binary.BigEndian.Uint16(b[off+4:])
		if r.target, err = readNameIn(b, off+6, end); err != nil {
			return r, 0, err
		}
	}
	return r, end, nil
}

// readNameIn reads a name that must end exactly at end, as a name inside
// RDATA does.
func readNameIn(b []byte, off, end int) (string, error) {
	name, next, err := readName(b, off)
	if err != nil {
		return "", err
	}
	if next != end {
		return "", fmt.Errorf("%w: name does not fill its record data", errMalformed)
	}
	return name, nil
}

// readName decodes the possibly compressed name at off and returns it in
// lower case without a final dot ("" for the root), and the offset after it
// in b. A compression pointer must point before the label it replaces, so
// that decoding always ends.
func readName(b []byte, off int) (string, int, error) {
	var sb strings.Builder
	next := -1 // the offset after the name, once a pointer was followed
	wire := 0  // the length on the wire, length octets included
	start := off
	for {
		if off >= len(b) {
			return "", 0, fmt.Errorf("%w: name cut short", errMalformed)
		}
		c := int(b[off])
		switch c & 0xC0 {
		case 0x00:
			if c == 0 {
				if next < 0 {
					next = off + 1
				}
				if wire+1 > maxNameLen {
					return "", 0, fmt.Errorf("%w: name longer than 255 bytes", errMalformed)
				}
				return sb.String(), next, nil
			}
			if off+1+c > len(b) {
				return "", 0, fmt.Errorf("%w: label cut short", errMalformed)
			}
			wire += 1 + c
			if wire+1 > maxNameLen {
				return "", 0, fmt.Errorf("%w: name longer than 255 bytes", errMalformed)
			}
			if sb.Len() > 0 {
				sb.WriteByte('.')
			}
			for _, ch := range b[off+1 : off+1+c] {
				if ch == '.' {
					return "", 0, fmt.Errorf("%w: label with a dot", errMalformed)
				}
				if 'A' <= ch && ch <= 'Z' {
					ch += 'a' - 'A'
				}
				sb.WriteByte(ch)
			}
			off += 1 + c
		case 0xC0:
			if off+2 > len(b) {
				return "", 0, fmt.Errorf("%w: pointer cut short", errMalformed)
			}
			ptr := int(binary.BigEndian.Uint16(b[off:]) & 0x3FFF)
			if ptr >= start {
				return "", 0, fmt.Errorf("%w: compression pointer does not point back", errMalformed)
			}
			if next < 0 {
				next = off + 2
			}
			off, start = ptr, ptr
		default:
			return "", 0, fmt.Errorf("%w: unknown label type %#x", errMalformed, c&0xC0)
		}
	}
}
