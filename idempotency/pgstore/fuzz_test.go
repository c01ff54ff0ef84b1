package pgstore

import (
	"strings"
	"testing"
	"time"
)

// FuzzParseTable checks that Config.Table is accepted exactly when it is one
// or two valid names, and that an accepted name is used as written.
func FuzzParseTable(f *testing.F) {
	for _, s := range []string{"bulwark_idempotency", "idem.records", "A.b_1", "", ".", "a.", "a.b.c", `a"b`, "1a", "ü", "a b",
		strings.Repeat("x", 50), strings.Repeat("x", 51), strings.Repeat("s", 64) + ".t"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		ident, err := parseTable(name)
		parts := strings.Split(name, ".")
		valid := len(parts) <= 2 && len(parts[len(parts)-1]) <= 50 && len(parts[0]) <= 63
		for _, p := range parts {
			valid = valid && validName(p)
		}
		if (err == nil) != valid {
			t.Fatalf("parseTable(%q) error = %v, want valid %v", name, err, valid)
		}
		if err != nil {
			return
		}
		if got := strings.Join(ident, "."); got != name {
			t.Fatalf("parseTable(%q) = %q, want the name as written", name, got)
		}
		if q := ident.Sanitize(); strings.Count(q, `"`) != 2*len(ident) || strings.ContainsAny(name, `"'\`) {
			t.Fatalf("parseTable(%q) quotes as %s, want plain quoting", name, q)
		}
	})
}

// FuzzExpiryOf checks that an expiry is the exact sum rounded up to the
// microsecond, so that a lease never ends early.
func FuzzExpiryOf(f *testing.F) {
	f.Add(int64(1767225600), int64(0), int64(30*time.Second))
	f.Add(int64(1767225600), int64(999), int64(1))
	f.Add(int64(1767225600), int64(123456789), int64(time.Hour))
	f.Fuzz(func(t *testing.T, sec, nsec, d int64) {
		if sec < 0 || sec > 1<<40 || d <= 0 {
			return
		}
		now := time.Unix(sec, nsec%1e9).UTC()
		got, err := expiryOf(now, time.Duration(d))
		if err != nil {
			return
		}
		want := now.Add(time.Duration(d))
		if got.Before(want) || !got.Before(want.Add(time.Microsecond)) || got.Nanosecond()%1000 != 0 {
			t.Fatalf("expiryOf(%v, %v) = %v, want %v rounded up to the microsecond", now, time.Duration(d), got, want)
		}
	})
}
