package idempotency

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// quote returns k as a Structured Field String.
func quote(k string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(k) + `"`
}

func TestParseKey(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"abc", "abc", false},
		{"  abc\t", "abc", false},
		{`"abc"`, "abc", false},
		{`"a b"`, "a b", false},
		{`"a\"b\\c"`, `a"b\c`, false},
		{"a-_.~:/+", "a-_.~:/+", false},
		{"", "", true},
		{`""`, "", true},
		{"a b", "", true},
		{"a,b", "", true},
		{`a"b`, "", true},
		{`a\b`, "", true},
		{`"abc`, "", true},
		{`"abc"x`, "", true},
		{`"a\x"`, "", true},
		{`"a` + "\x7f" + `"`, "", true},
		{"é", "", true},
		{strings.Repeat("x", 8), strings.Repeat("x", 8), false},
		{strings.Repeat("x", 9), "", true},
		{quote(strings.Repeat("x", 8)), strings.Repeat("x", 8), false},
		{quote(strings.Repeat("x", 9)), "", true},
		{quote(`xxxxxxx"`), `xxxxxxx"`, false},
		{quote(`xxxxxxxx"`), "", true},
	}
	for _, tt := range tests {
		got, err := parseKey(tt.in, 8)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseKey(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// FuzzParseKey checks the key validator: it never panics; an accepted key
// is 1 to max bytes of printable ASCII; the quoted form of an accepted key is
// the same key; and surrounding whitespace changes nothing.
func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"abc", `"abc"`, `"a\"b\\c"`, "", `""`, "a b", `"a b"`, "a,b",
		`"unterminated`, `"x"y`, `"\q"`, "\x00", "é", strings.Repeat("k", 300), " k ", "\tk"} {
		f.Add(s)
	}
	const maxLen = 64
	f.Fuzz(func(t *testing.T, in string) {
		k, err := parseKey(in, maxLen)
		if err != nil {
			if k != "" {
				t.Fatalf("parseKey(%q) = %q with error %v, want no key", in, k, err)
			}
			return
		}
		if len(k) < 1 || len(k) > maxLen {
			t.Fatalf("parseKey(%q) = %q, %d bytes; want 1 to %d", in, k, len(k), maxLen)
		}
		for i := 0; i < len(k); i++ {
			if k[i] < 0x20 || k[i] > 0x7e {
				t.Fatalf("parseKey(%q) = %q with byte %#x, want printable ASCII", in, k, k[i])
			}
		}
		if k2, err := parseKey(quote(k), maxLen); err != nil || k2 != k {
			t.Fatalf("parseKey(%q) = %q, %v; want %q (quoted form of parseKey(%q))", quote(k), k2, err, k, in)
		}
		if k3, err := parseKey(" \t"+in+"\t ", maxLen); err != nil || k3 != k {
			t.Fatalf("parseKey(%q) with whitespace around = %q, %v; want %q", in, k3, err, k)
		}
	})
}

func TestFingerprintCanonical(t *testing.T) {
	fp := func(method, target, body string) [32]byte {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			t.Fatalf("ParseRequestURI(%q): %v", target, err)
		}
		return requestFingerprint(method, u, []byte(body))
	}
	tests := []struct {
		name      string
		a, b      [3]string // method, target, body
		wantEqual bool
	}{
		{"same", [3]string{"POST", "/orders", "x"}, [3]string{"POST", "/orders", "x"}, true},
		{"method case", [3]string{"post", "/orders", "x"}, [3]string{"POST", "/orders", "x"}, true},
		{"encoded unreserved", [3]string{"POST", "/%6Frders", "x"}, [3]string{"POST", "/orders", "x"}, true},
		{"escape case", [3]string{"POST", "/a%2fb", "x"}, [3]string{"POST", "/a%2Fb", "x"}, true},
		{"query order", [3]string{"POST", "/o?b=2&a=1", "x"}, [3]string{"POST", "/o?a=1&b=2", "x"}, true},
		{"empty query parts", [3]string{"POST", "/o?a=1&&b=2&", "x"}, [3]string{"POST", "/o?a=1&b=2", "x"}, true},
		{"query escapes", [3]string{"POST", "/o?a=%7e", "x"}, [3]string{"POST", "/o?a=~", "x"}, true},
		{"body", [3]string{"POST", "/orders", "x"}, [3]string{"POST", "/orders", "y"}, false},
		{"method", [3]string{"POST", "/orders", "x"}, [3]string{"PATCH", "/orders", "x"}, false},
		{"path", [3]string{"POST", "/orders", "x"}, [3]string{"POST", "/order", "x"}, false},
		{"encoded slash is not a slash", [3]string{"POST", "/a%2Fb", "x"}, [3]string{"POST", "/a/b", "x"}, false},
		{"values of one name keep order", [3]string{"POST", "/o?a=1&a=2", "x"}, [3]string{"POST", "/o?a=2&a=1", "x"}, false},
		{"plus is not a space", [3]string{"POST", "/o?a=b+c", "x"}, [3]string{"POST", "/o?a=b%20c", "x"}, false},
		{"field boundaries", [3]string{"POST", "/o", "?a=1"}, [3]string{"POST", "/o?a=1", ""}, false},
		{"query vs none", [3]string{"POST", "/o?", "x"}, [3]string{"POST", "/o", "x"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := fp(tt.a[0], tt.a[1], tt.a[2]), fp(tt.b[0], tt.b[1], tt.b[2])
			if (a == b) != tt.wantEqual {
				t.Errorf("fingerprint(%q) == fingerprint(%q) is %v, want %v", tt.a, tt.b, a == b, tt.wantEqual)
			}
		})
	}
}

// FuzzFingerprint checks the canonical fingerprint: equal requests give
// equal fingerprints, whether their URLs were parsed once or twice;
// changing any one byte of the body, or the method, gives another.
func FuzzFingerprint(f *testing.F) {
	f.Add("POST", "/orders?b=2&a=1", []byte(`{"item":"tea"}`), uint(3), byte(1))
	f.Add("PATCH", "/a%2Fb/%7Ec", []byte{}, uint(0), byte(0xff))
	f.Add("post", "/", []byte("x"), uint(0), byte(0x80))
	f.Fuzz(func(t *testing.T, method, target string, body []byte, pos uint, flip byte) {
		u1, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		u2, err := url.ParseRequestURI(target)
		if err != nil {
			t.Fatalf("ParseRequestURI(%q) succeeded once, then failed: %v", target, err)
		}
		a := requestFingerprint(method, u1, body)
		if b := requestFingerprint(method, u2, bytes.Clone(body)); a != b {
			t.Fatalf("fingerprint(%q %q %q) differs between equal requests", method, target, body)
		}
		if b := requestFingerprint(strings.ToLower(method), u2, body); a != b {
			t.Fatalf("fingerprint(%q %q) depends on the method's case", method, target)
		}
		if len(body) > 0 && flip != 0 {
			changed := bytes.Clone(body)
			changed[pos%uint(len(body))] ^= flip
			if b := requestFingerprint(method, u1, changed); a == b {
				t.Fatalf("fingerprint(%q %q) unchanged when body byte %d changed", method, target, pos%uint(len(body)))
			}
		}
		if b := requestFingerprint(method+"X", u1, body); a == b {
			t.Fatalf("fingerprint(%q %q) unchanged when the method changed", method, target)
		}
		if b := requestFingerprint(method, u1, append(bytes.Clone(body), 0)); a == b {
			t.Fatalf("fingerprint(%q %q) unchanged when a byte was appended to the body", method, target)
		}
		// Normalization is idempotent: normalizing the canonical path and
		// query again changes nothing.
		p := normalizeEscapes(u1.EscapedPath())
		if normalizeEscapes(p) != p {
			t.Fatalf("normalizeEscapes is not idempotent on %q", u1.EscapedPath())
		}
		q := canonicalQuery(u1.RawQuery)
		if canonicalQuery(q) != q {
			t.Fatalf("canonicalQuery is not idempotent on %q", u1.RawQuery)
		}
	})
}

// FuzzReplay checks the decoder of stored responses: any stored bytes give
// either the response they encode or a 500, never a panic; and a response
// encoded by the recorder replays as it was.
func FuzzReplay(f *testing.F) {
	m := &middleware{engine: &Engine{}}
	for _, h := range defaultReplayHeaders {
		m.replayHdrs = append(m.replayHdrs, http.CanonicalHeaderKey(h))
	}
	f.Add(uint16(201), "application/json", "/orders/1", []byte(`{"id":1}`), []byte{}, false)
	f.Add(uint16(404), "", "", []byte{}, []byte{'h', 0, 1}, false)
	f.Add(uint16(200), "text/plain", "", []byte("x"), []byte{'h', 0, 0, 200, 5, 1}, true)
	f.Fuzz(func(t *testing.T, status uint16, contentType, location string, body, garbage []byte, omitted bool) {
		// Arbitrary stored bytes: no panic, and a 500 unless they decode.
		w := httptest.NewRecorder()
		m.replay(w, "k", garbage)
		if w.Code != http.StatusInternalServerError && w.Header().Get("Idempotent-Replayed") != "true" {
			t.Fatalf("replay(%q) = %d without Idempotent-Replayed", garbage, w.Code)
		}

		// A real encoding round-trips.
		if status < 200 || status > 999 {
			return
		}
		h := http.Header{}
		if contentType != "" {
			h["Content-Type"] = []string{contentType}
		}
		if location != "" {
			h["Location"] = []string{location, location + "/2"}
		}
		rec := &recorder{m: m}
		rec.head = m.appendHead(nil, int(status), h)
		rec.buf.Write(body)
		rec.overflow = omitted
		w = httptest.NewRecorder()
		m.replay(w, "k", rec.encoded())
		wantBody := body
		if omitted {
			wantBody = nil
		}
		if w.Code != int(status) || !bytes.Equal(w.Body.Bytes(), wantBody) ||
			w.Header().Get("Content-Type") != contentType ||
			strings.Join(w.Header()["Location"], ",") != strings.Join(h["Location"], ",") {
			t.Fatalf("replay of (%d, %v, %q) = %d, %v, %q", status, h, body, w.Code, w.Header(), w.Body.Bytes())
		}
	})
}
