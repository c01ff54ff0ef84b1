package bulwarktest_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/internal/base"
)

var start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestClockFiresInOrder(t *testing.T) {
	c := bulwarktest.NewClock(start)
	var got []string
	for _, tt := range []struct {
		name string
		d    time.Duration
	}{{"c", 3 * time.Second}, {"a", time.Second}, {"b", 2 * time.Second}, {"b2", 2 * time.Second}, {"late", time.Hour}} {
		c.AfterFunc(tt.d, func() { got = append(got, tt.name+"@"+c.Since(start).String()) })
	}
	c.Advance(3 * time.Second)
	if want := "a@1s b@2s b2@2s c@3s"; strings.Join(got, " ") != want {
		t.Errorf("fired %q, want %q", strings.Join(got, " "), want)
	}
	if n := c.Timers(); n != 1 {
		t.Errorf("Timers() = %d, want 1 (the late one)", n)
	}
	if got := c.Since(start); got != 3*time.Second {
		t.Errorf("Since(start) = %v, want 3s", got)
	}
}

func TestClockTimerChannel(t *testing.T) {
	c := bulwarktest.NewClock(start)
	tm := c.NewTimer(time.Minute)
	c.Advance(59 * time.Second)
	select {
	case <-tm.C():
		t.Fatal("timer fired early")
	default:
	}
	c.Advance(time.Second)
	select {
	case at := <-tm.C():
		if !at.Equal(start.Add(time.Minute)) {
			t.Errorf("timer sent %v, want %v", at, start.Add(time.Minute))
		}
	default:
		t.Fatal("timer did not fire at its deadline")
	}
	if tm.Stop() {
		t.Error("Stop() of a fired timer = true, want false")
	}
}

func TestClockStopAndReset(t *testing.T) {
	c := bulwarktest.NewClock(start)
	fired := 0
	tm := c.AfterFunc(time.Second, func() { fired++ })
	if !tm.Stop() {
		t.Fatal("Stop() of a pending timer = false")
	}
	c.Advance(time.Hour)
	if fired != 0 {
		t.Fatalf("stopped timer fired %d times", fired)
	}
	if tm.Reset(time.Second) {
		t.Error("Reset() of a stopped timer = true, want false")
	}
	c.Advance(time.Second)
	if fired != 1 {
		t.Errorf("reset timer fired %d times, want 1", fired)
	}
}

func TestClockTimerCreatedWhileFiring(t *testing.T) {
	c := bulwarktest.NewClock(start)
	var ticks []time.Duration
	var tick func()
	tick = func() {
		ticks = append(ticks, c.Since(start))
		c.AfterFunc(time.Second, tick)
	}
	c.AfterFunc(time.Second, tick)
	c.Advance(3500 * time.Millisecond)
	if len(ticks) != 3 || ticks[2] != 3*time.Second {
		t.Errorf("periodic ticks = %v, want [1s 2s 3s]", ticks)
	}
}

func TestSleepWithFakeClock(t *testing.T) {
	c := bulwarktest.NewClock(start)
	done := make(chan error, 1)
	go func() { done <- base.Sleep(context.Background(), c, 5*time.Second) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.BlockUntil(ctx, 1); err != nil {
		t.Fatalf("BlockUntil = %v", err)
	}
	c.Advance(5 * time.Second)
	if err := <-done; err != nil {
		t.Errorf("Sleep = %v, want nil", err)
	}
}

func TestSleepCanceled(t *testing.T) {
	c := bulwarktest.NewClock(start)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := base.Sleep(ctx, c, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep(canceled) = %v, want context.Canceled", err)
	}
	if n := c.Timers(); n != 0 {
		t.Errorf("Sleep left %d timers pending", n)
	}
}

func TestBlockUntilCanceled(t *testing.T) {
	c := bulwarktest.NewClock(start)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.BlockUntil(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("BlockUntil(canceled) = %v, want context.Canceled", err)
	}
}

func TestClockConcurrentSafe(t *testing.T) {
	c := bulwarktest.NewClock(start)
	var wg sync.WaitGroup
	var mu sync.Mutex
	fired := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				c.AfterFunc(time.Duration(j)*time.Millisecond, func() { mu.Lock(); fired++; mu.Unlock() })
				_ = c.Now()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for j := 0; j < 100; j++ {
			c.Advance(time.Millisecond)
		}
	}()
	wg.Wait()
	c.Advance(time.Second)
	if fired != 800 {
		t.Errorf("fired %d timers, want 800", fired)
	}
}
