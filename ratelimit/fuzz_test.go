package ratelimit_test

import (
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/ratelimit"
)

// FuzzLimiter drives a limiter with arbitrary rates, bursts and requests:
// over any span of time it never passes more than Burst + span / interval
// tokens, a refusal's RetryAfter is exact, and Remaining never exceeds
// Burst.
func FuzzLimiter(f *testing.F) {
	f.Add(uint16(10), uint8(5), []byte{0, 1, 10, 3, 200, 2, 0, 5})
	f.Add(uint16(1), uint8(1), []byte{255, 1, 0, 1, 0, 1})
	f.Add(uint16(1000), uint8(50), []byte{1, 50, 1, 50, 0, 51})
	f.Fuzz(func(t *testing.T, rate uint16, burst uint8, ops []byte) {
		if rate == 0 || burst == 0 {
			return
		}
		l, err := ratelimit.New(ratelimit.Config{Rate: int(rate), Burst: int(burst)})
		if err != nil {
			t.Fatalf("New(%d, %d): %v", rate, burst, err)
		}
		interval := (int64(time.Second) + int64(rate) - 1) / int64(rate)
		type take struct {
			at int64
			n  int
		}
		var taken []take
		now := t0
		for i := 0; i+1 < len(ops); i += 2 {
			now = now.Add(time.Duration(ops[i]) * time.Duration(interval) / 16)
			n := int(ops[i+1]) % (int(burst) + 2)
			r := l.AllowN(now, n)
			if r.Remaining > int(burst) || r.Remaining < 0 {
				t.Fatalf("Remaining %d outside [0, %d]", r.Remaining, burst)
			}
			if r.Allowed {
				if n > 0 {
					taken = append(taken, take{int64(now.Sub(t0)), n})
				}
				continue
			}
			if n > int(burst) {
				continue
			}
			if l.AllowN(now.Add(r.RetryAfter-1), n).Allowed {
				t.Fatalf("AllowN(%d) passed before its RetryAfter %v", n, r.RetryAfter)
			}
		}
		for i := range taken {
			sum := 0
			for j := i; j < len(taken); j++ {
				sum += taken[j].n
				if limit := int64(burst) + (taken[j].at-taken[i].at)/interval; int64(sum) > limit {
					t.Fatalf("%d tokens over %v, limit %d", sum, time.Duration(taken[j].at-taken[i].at), limit)
				}
			}
		}
	})
}

// FuzzGroupKeys feeds arbitrary keys to a small Group: each key keeps its own
// limit, and the group never holds more than MaxKeys keys.
func FuzzGroupKeys(f *testing.F) {
	f.Add("tenant-1", "tenant-2", uint8(3))
	f.Add("", "\x00", uint8(40))
	f.Fuzz(func(t *testing.T, a, b string, extra uint8) {
		g, _ := newGroup(t, ratelimit.GroupConfig{Limit: ratelimit.Config{Rate: 1, Period: time.Hour, Burst: 1}, MaxKeys: 8})
		if !g.Allow(a) {
			t.Fatalf("first Allow(%q) = false", a)
		}
		if a != b && !g.Allow(b) {
			t.Fatalf("first Allow(%q) = false after Allow(%q)", b, a)
		}
		if g.Allow(a) {
			t.Fatalf("second Allow(%q) = true", a)
		}
		for i := range int(extra) {
			g.Allow(string(rune('A'+i%60)) + a)
			if n := g.Len(); n > 8 {
				t.Fatalf("Len() = %d, above MaxKeys 8", n)
			}
		}
	})
}
