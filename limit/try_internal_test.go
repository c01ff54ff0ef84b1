package limit

import "testing"

// A token keeps a sampled call's start to within its 16 ns unit, rounded up
// so that a sampled call stays one, for 36 years after New; and the stripe
// exactly.
func TestTokenKeepsTheStart(t *testing.T) {
	l, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, start := range []int64{0, 1, 15, 16, 17, 1e9 + 3, 1 << 56, 1<<60 - 16} {
		p := l.unpackToken(packToken(start, 63))
		ok := p.start >= start && p.start < start+16
		if start == 0 {
			ok = p.start == 0
		}
		if !ok || p.stripe != 63 || p.l != l {
			t.Errorf("unpack(pack(%d, 63)) = start %d, stripe %d; want a start in [%d, %d], stripe 63", start, p.start, p.stripe, start, start+15)
		}
	}
}
