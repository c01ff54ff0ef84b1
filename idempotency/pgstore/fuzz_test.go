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

// FuzzMicros checks that a duration is rounded up to the microsecond, so
// that a lease never ends early.
func FuzzMicros(f *testing.F) {
	f.Add(int64(30 * time.Second))
	f.Add(int64(1))
	f.Add(int64(999))
	f.Add(int64(-1))
	f.Fuzz(func(t *testing.T, n int64) {
		d := time.Duration(n)
		us, err := micros("lease", d)
		if (err != nil) != (d <= 0) {
			t.Fatalf("micros(%v) error = %v, want one only for d <= 0", d, err)
		}
		if err != nil {
			return
		}
		if got := time.Duration(us) * time.Microsecond; us <= 0 || (d < 1<<62 && (got < d || got >= d+time.Microsecond)) {
			t.Fatalf("micros(%v) = %d µs, want it rounded up to the microsecond", d, us)
		}
	})
}
