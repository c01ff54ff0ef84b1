package idempotency

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// parseKey returns the idempotency key of an Idempotency-Key header value.
// The draft (draft-ietf-httpapi-idempotency-key-header) makes the value a
// Structured Field String, a quoted string with \" and \\ escapes; clients
// following Stripe send a bare token. Both are accepted:
//
//   - "…": printable ASCII (0x20–0x7E), with '"' and '\' only escaped;
//   - bare: visible ASCII (0x21–0x7E) except '"', '\' and ','.
//
// Surrounding spaces and tabs are ignored. The key must be 1 to maxLen bytes
// long, after unescaping. Errors wrap ErrInvalidKey.
func parseKey(v string, maxLen int) (string, error) {
	v = strings.Trim(v, " \t")
	if v == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidKey)
	}
	if v[0] != '"' {
		if len(v) > maxLen {
			return "", fmt.Errorf("%w: longer than %d bytes", ErrInvalidKey, maxLen)
		}
		for i := 0; i < len(v); i++ {
			if c := v[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' || c == ',' {
				return "", fmt.Errorf("%w: byte %#02x at %d", ErrInvalidKey, c, i)
			}
		}
		return v, nil
	}
	// A quoted string. Most have no escapes: return a substring then.
	end := strings.IndexAny(v[1:], "\"\\")
	if end >= 0 && v[1+end] == '"' && 2+end == len(v) {
		k := v[1 : 1+end]
		if err := checkQuoted(k, maxLen); err != nil {
			return "", err
		}
		return k, nil
	}
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\':
			i++
			if i >= len(v) || (v[i] != '"' && v[i] != '\\') {
				return "", fmt.Errorf("%w: bad escape at %d", ErrInvalidKey, i-1)
			}
			b.WriteByte(v[i])
		case c == '"':
			if i != len(v)-1 {
				return "", fmt.Errorf("%w: text after the closing quote", ErrInvalidKey)
			}
			k := b.String()
			if err := checkQuoted(k, maxLen); err != nil {
				return "", err
			}
			return k, nil
		case c < 0x20 || c > 0x7e:
			return "", fmt.Errorf("%w: byte %#02x at %d", ErrInvalidKey, c, i)
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("%w: no closing quote", ErrInvalidKey)
}

// checkQuoted checks the unescaped content of a quoted key.
func checkQuoted(k string, maxLen int) error {
	if k == "" {
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	}
	if len(k) > maxLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidKey, maxLen)
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("%w: byte %#02x at %d", ErrInvalidKey, c, i)
		}
	}
	return nil
}

// fingerprintVersion starts every fingerprint's input, so that a change of
// the canonical form changes every fingerprint rather than colliding.
const fingerprintVersion = "bulwark-idempotency-fingerprint/1"

// requestFingerprint returns the SHA-256 of the canonical form of a request:
// its method (upper-cased), its path and query, and its body, each
// length-prefixed so that no two different requests share an input. The path
// and query are normalized as RFC 3986 section 6.2.2 allows: percent-encoded
// unreserved characters are decoded and other percent-encodings are
// upper-cased, and a stray '%' is written %25; query parameters are ordered
// by name, keeping the order of the values of one name, and empty ones are
// dropped. Nothing else is changed: '+' stays distinct from %20.
func requestFingerprint(method string, u *url.URL, body []byte) [32]byte {
	h := sha256.New()
	var scratch [128]byte
	buf := scratch[:0]
	buf = appendField(buf, fingerprintVersion)
	buf = appendField(buf, strings.ToUpper(method))
	buf = appendField(buf, normalizeEscapes(u.EscapedPath()))
	buf = appendField(buf, canonicalQuery(u.RawQuery))
	buf = binary.AppendUvarint(buf, uint64(len(body)))
	h.Write(buf)
	h.Write(body)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func appendField(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

// canonicalQuery normalizes the escapes of each parameter and orders the
// parameters by name, stably. Empty parameters ("a=1&&b=2") are dropped.
func canonicalQuery(q string) string {
	if q == "" {
		return ""
	}
	parts := strings.Split(q, "&")
	n := 0
	for _, p := range parts {
		if p != "" {
			parts[n] = normalizeEscapes(p)
			n++
		}
	}
	parts = parts[:n]
	slices.SortStableFunc(parts, func(a, b string) int {
		return strings.Compare(paramName(a), paramName(b))
	})
	return strings.Join(parts, "&")
}

func paramName(p string) string {
	if i := strings.IndexByte(p, '='); i >= 0 {
		return p[:i]
	}
	return p
}

// normalizeEscapes decodes percent-encoded unreserved characters
// (ALPHA / DIGIT / "-" / "." / "_" / "~") and upper-cases the hex digits of
// the other percent-encodings. A '%' not followed by two hex digits stands
// for itself and becomes %25, so that normalizing twice changes nothing.
func normalizeEscapes(s string) string {
	i := strings.IndexByte(s, '%')
	if i < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	b = append(b, s[:i]...)
	for ; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			b = append(b, c)
			continue
		}
		if i+2 >= len(s) {
			b = append(b, "%25"...) // a stray '%' is a literal one
			continue
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			b = append(b, "%25"...)
			continue
		}
		d := hi<<4 | lo
		if isUnreserved(d) {
			b = append(b, d)
		} else {
			const hexUpper = "0123456789ABCDEF"
			b = append(b, '%', hexUpper[d>>4], hexUpper[d&15])
		}
		i += 2
	}
	return string(b)
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}
