package redisstore

import (
	"strconv"
	"testing"
	"time"
)

// FuzzMakeRecord feeds arbitrary hash fields, as a corrupted or foreign key
// would hold, to the record parser: it must return an error or a record
// that says what the fields say, never panic.
func FuzzMakeRecord(f *testing.F) {
	f.Add("fp", "42", "1", "value", "1767225600000000", "1767312000000000")
	f.Add("", "18446744073709551615", "0", "", "0", "")
	f.Add("x", "-1", "1", "v", "abc", "1")
	f.Fuzz(func(t *testing.T, fp, token, state, value, lease, expires string) {
		rec, err := makeRecord("k", fp, token, state, value, lease, expires)
		if err != nil {
			return
		}
		tok, terr := strconv.ParseUint(token, 10, 64)
		if terr != nil || rec.Token != tok || rec.Completed != (state == "1") || string(rec.Fingerprint) != fp {
			t.Fatalf("makeRecord(%q, %q, %q) = %+v, want token %q, completed %v", fp, token, state, rec, token, state == "1")
		}
		if rec.Completed && string(rec.Value) != value || !rec.Completed && rec.Value != nil {
			t.Fatalf("makeRecord value = %q, want %q only when completed", rec.Value, value)
		}
	})
}

// FuzzParseClaim feeds arbitrary script replies to the claim parser, which
// must never panic.
func FuzzParseClaim(f *testing.F) {
	f.Add(int64(1), "1", "fp", "7", "1", "v", "1", "2", 7)
	f.Add(int64(0), "", "", "", "", "", "", "", 2)
	f.Fuzz(func(t *testing.T, won int64, a, b, c, d, e, g, h string, n int) {
		all := []any{won, a, b, c, d, e, g, h}
		if n < 0 || n > len(all) {
			return
		}
		cl, err := parseClaim("k", 9, all[:n])
		if err == nil && cl.Won && cl.Token != 9 {
			t.Fatalf("parseClaim won with token %d, want 9", cl.Token)
		}
	})
}

// FuzzDuration checks that leases are rounded up to the microsecond, so
// that a lease never ends early, and that the TTL covers them.
func FuzzDuration(f *testing.F) {
	f.Add(int64(time.Second))
	f.Add(int64(1))
	f.Add(int64(999))
	f.Add(int64(1) << 62)
	s := &Store{grace: time.Minute}
	f.Fuzz(func(t *testing.T, n int64) {
		d := time.Duration(n)
		us, ttl, err := s.duration("lease", d)
		if err != nil {
			if d > 0 && d < maxMicros*time.Microsecond/2 {
				t.Fatalf("duration(%v) error = %v, want none", d, err)
			}
			return
		}
		u, _ := strconv.ParseInt(us, 10, 64)
		ms, _ := strconv.ParseInt(ttl, 10, 64)
		if got := time.Duration(u) * time.Microsecond; got < d || got >= d+time.Microsecond {
			t.Fatalf("duration(%v) = %d µs, want it rounded up to the microsecond", d, u)
		}
		if time.Duration(ms)*time.Millisecond < d+time.Minute {
			t.Fatalf("duration(%v) TTL = %d ms, want at least the lease plus the grace", d, ms)
		}
	})
}
