package discovery

import (
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"
)

// response returns a valid response to buildQuery(id, "api.internal", A)
// with one A record whose owner is a compression pointer to the question.
func response(id uint16) []byte {
	q := buildQuery(id, "api.internal", typeA)
	m := slices.Clone(q[:len(q)-11]) // without the OPT record
	binary.BigEndian.PutUint16(m[2:], 1<<15|1<<8|1<<7)
	binary.BigEndian.PutUint16(m[6:], 1)  // ANCOUNT
	binary.BigEndian.PutUint16(m[10:], 0) // ARCOUNT
	m = append(m, 0xC0, headerLen)
	m = binary.BigEndian.AppendUint16(m, typeA)
	m = binary.BigEndian.AppendUint16(m, classIN)
	m = binary.BigEndian.AppendUint32(m, 30)
	return append(m, 0, 4, 10, 0, 0, 1)
}

func TestParseMessage(t *testing.T) {
	m, err := parseMessage(response(7))
	if err != nil {
		t.Fatalf("parseMessage(valid) error = %v", err)
	}
	if !matches(m, 7, "api.internal", typeA) || len(m.answers) != 1 ||
		m.answers[0].name != "api.internal" || m.answers[0].addr.String() != "10.0.0.1" || m.answers[0].ttl != 30 {
		t.Errorf("parseMessage(valid) = %+v", m)
	}

	loop := response(7)
	loop = append(loop[:len(loop)-16], 0xC0, byte(len(loop)-16)) // a pointer to itself
	selfRef := func() []byte {
		b := response(7)
		// The answer's owner points forward, at its own record data.
		b[len(b)-16+1] = byte(len(b) - 4)
		return b
	}()
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short header", make([]byte, 11)},
		{"no question", make([]byte, 12)},
		{"cut in the answer", response(7)[:len(response(7))-3]},
		{"pointer loop", loop},
		{"forward pointer", selfRef},
		{"wrong A length", func() []byte { b := response(7); b[len(b)-5] = 5; return append(b, 0) }()},
		{"long label", append(append(make([]byte, 4), 0, 1, 0, 0, 0, 0, 0, 0, 64), make([]byte, 64)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if m, err := parseMessage(tc.b); !errors.Is(err, errMalformed) {
				t.Errorf("parseMessage(% x) = %+v, %v; want errMalformed", tc.b, m, err)
			}
		})
	}
}

func TestReadNameBoundsLength(t *testing.T) {
	// Five 63-byte labels: 320 bytes on the wire, over 255.
	b := make([]byte, headerLen)
	for range 5 {
		b = append(b, 63)
		b = append(b, strings.Repeat("a", 63)...)
	}
	b = append(b, 0)
	if _, _, err := readName(b, headerLen); !errors.Is(err, errMalformed) {
		t.Errorf("readName(320-byte name) error = %v, want errMalformed", err)
	}
}

func TestParseResolvConf(t *testing.T) {
	conf := `# generated
search example.com
nameserver 10.0.0.2
nameserver   fd00::53 # second
nameserver not-an-ip
options ndots:5
nameserver 10.0.0.3;comment
nameserver
`
	got := parseResolvConf(strings.NewReader(conf))
	want := []string{"10.0.0.2:53", "[fd00::53]:53", "10.0.0.3:53"}
	if !slices.Equal(got, want) {
		t.Errorf("parseResolvConf() = %q, want %q", got, want)
	}
	if got := readResolvConf("/nonexistent/resolv.conf"); !slices.Equal(got, defaultServers()) {
		t.Errorf("readResolvConf(missing file) = %q, want the defaults %q", got, defaultServers())
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add(response(1))
	f.Add(buildQuery(2, "_http._tcp.api.internal", typeSRV))
	f.Add([]byte{0, 1, 0x80, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0xC0, 12})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMessage(b)
		if err != nil {
			return
		}
		for _, r := range append(m.answers, m.extra...) {
			for _, name := range []string{r.name, r.target} {
				if len(name) > 253 {
					t.Errorf("parseMessage(% x): name of %d characters", b, len(name))
				}
			}
			if r.class == classIN && (r.typ == typeA && !r.addr.Is4() || r.typ == typeAAAA && !r.addr.Is6()) {
				t.Errorf("parseMessage(% x): %s record with address %v", b, typeName(r.typ), r.addr)
			}
		}
	})
}

// FuzzNewDNSName feeds NewDNS arbitrary names: it returns an error or a
// resolver whose query carries the name, lower-cased, through the decoder.
func FuzzNewDNSName(f *testing.F) {
	for _, s := range []string{"api.internal", "_http._tcp.api.", "10.0.0.1", "a..b", "", ".", "fd00::1", "x" + strings.Repeat(".y", 130)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		d, err := NewDNS(DNSConfig{Name: name, Port: 80})
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("NewDNS(%q) error = %v, want ErrInvalidConfig", name, err)
			}
			return
		}
		if d.literal != nil {
			return
		}
		m, err := parseMessage(buildQuery(1, d.name, typeA))
		if err != nil {
			t.Fatalf("NewDNS(%q): its query does not parse: %v", name, err)
		}
		if want := strings.ToLower(strings.TrimSuffix(name, ".")); m.qname != want {
			t.Errorf("NewDNS(%q): query for %q, want %q", name, m.qname, want)
		}
	})
}

func FuzzParseResolvConf(f *testing.F) {
	f.Add("nameserver 10.0.0.2\nnameserver fd00::53%eth0\n")
	f.Fuzz(func(t *testing.T, conf string) {
		for _, s := range parseResolvConf(strings.NewReader(conf)) {
			if _, err := parseServer(s); err != nil {
				t.Errorf("parseResolvConf(%q) gave %q, which is not a server address: %v", conf, s, err)
			}
		}
	})
}
