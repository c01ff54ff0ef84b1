package retry

import (
	"math"
	"strings"
	"testing"
	"time"
)

// wantCeiling is the AWS ceiling min(cap, base·mult^(n-1)), computed in
// floating point, independently of Backoff.ceiling.
func wantCeiling(b Backoff, n int) time.Duration {
	base, cp, m := b.base(), b.cap(), b.Multiplier
	if m == 0 {
		m = defaultMultiplier
	}
	f := float64(base) * math.Pow(m, float64(max(n, 1)-1))
	if f >= float64(cp) || math.IsNaN(f) {
		return cp
	}
	return time.Duration(f)
}

// checkDelay reports why d is out of bounds for retry n of b, or "".
func checkDelay(b Backoff, n int, prev, d time.Duration) string {
	c := wantCeiling(b, n)
	// Float rounding of the ceiling may differ from the exact shift by 1 ns per 2^53.
	slack := time.Duration(float64(c)/(1<<52)) + 1
	hiC := c + slack
	if hiC < c { // saturate
		hiC = math.MaxInt64
	}
	switch b.Jitter {
	case FullJitter:
		if d < 0 || d > hiC {
			return "outside [0, ceiling " + c.String() + "]"
		}
	case EqualJitter:
		if d < c/2-slack || d > hiC {
			return "outside [ceiling/2, ceiling " + c.String() + "]"
		}
	case NoJitter:
		if d < c-slack || d > hiC {
			return "not the ceiling " + c.String()
		}
	case DecorrelatedJitter:
		base, cp := b.base(), b.cap()
		p := max(prev, base)
		hi := cp
		if p <= math.MaxInt64/3 {
			hi = min(3*p, cp)
		}
		if d < min(base, cp) || d > hi {
			return "outside [base, min(cap, 3·prev) " + hi.String() + "]"
		}
	}
	return ""
}

func TestBackoffDelayBounds(t *testing.T) {
	cases := []struct {
		name string
		b    Backoff
	}{
		{"zero value", Backoff{}},
		{"full", Backoff{Base: 10 * time.Millisecond, Cap: time.Second}},
		{"equal", Backoff{Base: 10 * time.Millisecond, Cap: time.Second, Jitter: EqualJitter}},
		{"decorrelated", Backoff{Base: 10 * time.Millisecond, Cap: time.Second, Jitter: DecorrelatedJitter}},
		{"none", Backoff{Base: 10 * time.Millisecond, Cap: time.Second, Jitter: NoJitter}},
		{"constant", Backoff{Base: 250 * time.Millisecond, Multiplier: 1, Jitter: NoJitter}},
		{"multiplier 1.5", Backoff{Base: time.Millisecond, Cap: time.Minute, Multiplier: 1.5}},
		{"huge cap", Backoff{Base: time.Nanosecond, Cap: math.MaxInt64, Jitter: EqualJitter}},
		{"huge cap decorrelated", Backoff{Base: time.Hour, Cap: math.MaxInt64, Jitter: DecorrelatedJitter}},
		{"base equals cap", Backoff{Base: time.Second, Cap: time.Second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := uint64(12345)
			var prev time.Duration
			for n := 1; n <= 200; n++ {
				for _, draw := range []uint64{0, math.MaxUint64, splitmix64(r)} {
					d := tc.b.Delay(n, prev, draw)
					if why := checkDelay(tc.b, n, prev, d); why != "" {
						t.Fatalf("%+v.Delay(%d, %v, %#x) = %v, %s", tc.b, n, prev, draw, d, why)
					}
				}
				r += golden
				prev = tc.b.Delay(n, prev, splitmix64(r))
			}
		})
	}
}

func TestBackoffExtremesReachBounds(t *testing.T) {
	b := Backoff{Base: time.Second, Cap: time.Minute}
	cases := []struct {
		name string
		b    Backoff
		n    int
		r    uint64
		want time.Duration
	}{
		{"full low", b, 3, 0, 0},
		{"full high", b, 3, math.MaxUint64, 4 * time.Second},
		{"full capped", b, 30, math.MaxUint64, time.Minute},
		{"equal low", Backoff{Base: time.Second, Cap: time.Minute, Jitter: EqualJitter}, 3, 0, 2 * time.Second},
		{"none", Backoff{Base: time.Second, Cap: time.Minute, Jitter: NoJitter}, 4, 7, 8 * time.Second},
		{"constant", Backoff{Base: time.Second, Multiplier: 1, Jitter: NoJitter}, 9, 7, time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.b.Delay(tc.n, 0, tc.r); got != tc.want {
				t.Errorf("Delay(%d, 0, %#x) = %v, want %v", tc.n, tc.r, got, tc.want)
			}
		})
	}
}

// The draws of the default full jitter must spread over the whole range, not
// bunch: each tenth of [0, ceiling] gets close to a tenth of the draws.
func TestBackoffFullJitterIsUniform(t *testing.T) {
	b := Backoff{Base: time.Second, Cap: time.Second}
	var tenths [10]int
	const draws = 100000
	s := uint64(42)
	for range draws {
		s += golden
		d := b.Delay(1, 0, splitmix64(s))
		tenths[min(int(d*10/time.Second), 9)]++
	}
	for i, got := range tenths {
		if got < draws/10*95/100 || got > draws/10*105/100 {
			t.Errorf("tenth %d of full jitter got %d of %d draws, want about %d", i, got, draws, draws/10)
		}
	}
}

func TestBackoffValidate(t *testing.T) {
	cases := []struct {
		name string
		b    Backoff
		want string // substring of the error; "" for valid
	}{
		{"zero", Backoff{}, ""},
		{"constant", Backoff{Base: time.Second, Multiplier: 1}, ""},
		{"negative base", Backoff{Base: -1}, "negative Base"},
		{"negative cap", Backoff{Cap: -1}, "negative Cap"},
		{"cap below base", Backoff{Base: time.Minute, Cap: time.Second}, "Cap 1s below Base 1m0s"},
		{"cap below default base", Backoff{Cap: time.Millisecond}, "below Base"},
		{"multiplier below 1", Backoff{Multiplier: 0.5}, "Multiplier 0.5"},
		{"negative multiplier", Backoff{Multiplier: -2}, "Multiplier -2"},
		{"NaN multiplier", Backoff{Multiplier: math.NaN()}, "Multiplier NaN"},
		{"infinite multiplier", Backoff{Multiplier: math.Inf(1)}, "Multiplier +Inf"},
		{"unknown jitter", Backoff{Jitter: 9}, "unknown Jitter 9"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.b.validate()
			if tc.want == "" {
				if err != nil {
					t.Errorf("validate(%+v) = %v, want nil", tc.b, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("validate(%+v) = %v, want an error containing %q", tc.b, err, tc.want)
			}
		})
	}
}

func TestJitterString(t *testing.T) {
	cases := map[Jitter]string{FullJitter: "full", EqualJitter: "equal", DecorrelatedJitter: "decorrelated", NoJitter: "none", 7: "jitter(7)"}
	for j, want := range cases {
		if got := j.String(); got != want {
			t.Errorf("Jitter(%d).String() = %q, want %q", uint8(j), got, want)
		}
	}
}

// FuzzBackoffDelay checks the bounds of every jitter formula over attempts,
// bases, caps, multipliers, previous delays and random draws.
func FuzzBackoffDelay(f *testing.F) {
	f.Add(int64(100e6), int64(10e9), 2.0, uint8(0), 5, int64(0), uint64(1))
	f.Add(int64(1), int64(math.MaxInt64), 3.0, uint8(1), 80, int64(5), uint64(math.MaxUint64))
	f.Add(int64(1e9), int64(1e9), 1.0, uint8(2), 1, int64(math.MaxInt64), uint64(7))
	f.Add(int64(0), int64(0), 0.0, uint8(3), -4, int64(-1), uint64(0))
	f.Add(int64(7), int64(1e12), 1.0001, uint8(2), 1<<20, int64(1e11), uint64(99))
	f.Fuzz(func(t *testing.T, base, cp int64, mult float64, jitter uint8, n int, prev int64, r uint64) {
		b := Backoff{Base: time.Duration(base), Cap: time.Duration(cp), Multiplier: mult, Jitter: Jitter(jitter)}
		if b.validate() != nil {
			return
		}
		d := b.Delay(n, time.Duration(prev), r)
		if why := checkDelay(b, n, time.Duration(prev), d); why != "" {
			t.Fatalf("%+v.Delay(%d, %v, %#x) = %v, %s", b, n, time.Duration(prev), r, d, why)
		}
	})
}
