package throttle_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/throttle"
)

// FuzzWindow checks the Policy against a plain model of the SRE formula over
// a sliding window of steps: each byte is one call (its low bits choose
// success, failure, permanent error or a caller's cancellation) or a move
// of the clock. The probability is always the model's, capped, and within
// [0, MaxProbability].
func FuzzWindow(f *testing.F) {
	f.Add([]byte{0, 0, 1, 1, 1, 1, 0x84, 1, 2, 3, 0xff, 1})
	f.Add([]byte{1, 1, 1, 1, 1, 1, 1, 1, 0x90, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		const buckets, step = 5, time.Second
		p, clk := newPolicy(t, throttle.Config{Random: never, MaxProbability: 0.8, Window: buckets * step, Buckets: buckets})
		type count struct{ req, acc int }
		steps := map[int]*count{}
		cur := 0
		canceled, cancel := context.WithCancel(context.Background())
		cancel()
		for _, op := range ops {
			if op&0x80 != 0 {
				d := int(op & 0x7f % 8)
				clk.Advance(time.Duration(d) * step)
				cur += d
				continue
			}
			if steps[cur] == nil {
				steps[cur] = &count{}
			}
			c := steps[cur]
			switch op % 4 {
			case 0:
				_ = p.Do(context.Background(), ok)
				c.req++
				c.acc++
			case 1:
				_ = p.Do(context.Background(), overloaded)
				c.req++
			case 2:
				_ = p.Do(context.Background(), func(context.Context) error { return bulwark.Permanent(errors.New("400")) })
				c.req++
				c.acc++
			case 3:
				_ = p.Do(canceled, func(ctx context.Context) error { return ctx.Err() })
			}
			req, acc := 0, 0
			for s, c := range steps {
				if cur-s < buckets {
					req += c.req
					acc += c.acc
				}
			}
			want := math.Min(0.8, sre(2, req, acc))
			if got := p.Probability(); math.Abs(got-want) > 1e-12 || got < 0 || got > 0.8 {
				t.Fatalf("Probability() = %v, want %v (requests %d, accepts %d)", got, want, req, acc)
			}
		}
	})
}
