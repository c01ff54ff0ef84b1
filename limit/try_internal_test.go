package limit

import (
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/bulwarktest"
)

// A token keeps a sampled call's start exactly, across the wrap of its 56
// bits, as long as the call lasts less than 2^56 ns.
func TestTokenKeepsTheStart(t *testing.T) {
	clk := bulwarktest.NewClock(time.Time{})
	l, err := New(Config{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	const wrap = int64(tokenStartMask) + 1
	for _, tc := range []struct {
		name       string
		start, now int64 // elapsed ns, as l.now() counts them
	}{
		{"not sampled", 0, 5},
		{"first ns", 1, 1000},
		{"before the wrap", wrap - 10, wrap + 10},
		{"on the wrap", wrap, wrap + 3},
		{"after the wrap", wrap + 7, 2*wrap - 1},
		{"a long call", 5, wrap - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk.Set(l.base.Add(time.Duration(tc.now - 1))) // l.now() is the time since base, plus 1
			p := l.unpackToken(packToken(tc.start, 42))
			want := tc.start
			if tc.start%wrap == 0 && tc.start != 0 {
				want-- // a multiple of 2^56 is kept 1 ns early
			}
			if p.start != want || p.stripe != 42 || p.l != l {
				t.Errorf("unpack(pack(%d, 42)) at %d = start %d, stripe %d; want %d, 42", tc.start, tc.now, p.start, p.stripe, want)
			}
		})
	}
}
