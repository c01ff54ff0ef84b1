package idempotencytest_test

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark/idempotency/idempotencytest"
)

// echo serves a line-echo server on loopback until the test ends.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends a line through addr and reads it back, within a second.
func roundTrip(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	_, err = bufio.NewReader(c).ReadString('\n')
	return err
}

func TestFaultProxy(t *testing.T) {
	p := idempotencytest.NewFaultProxy(t, echo(t))
	steps := []struct {
		name    string
		do      func()
		wantErr bool
	}{
		{"up", func() {}, false},
		{"cut", p.Cut, true},
		{"restored", p.Restore, false},
		{"black-holed", p.Blackhole, true},
		{"restored again", p.Restore, false},
	}
	for _, s := range steps {
		s.do()
		if err := roundTrip(p.Addr()); (err != nil) != s.wantErr {
			t.Errorf("%s: round trip error = %v, want error %v", s.name, err, s.wantErr)
		}
	}
}
