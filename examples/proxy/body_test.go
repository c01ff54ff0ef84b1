package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/balancer"
)

func TestPostThatFailedToConnectIsSentAgainWhole(t *testing.T) {
	dead, good := newBackend(t, "dead", 0), newBackend(t, "good", 0)
	dead.kill()
	count := &counting{base: &http.Transport{}, hits: map[string]int{}}
	defer count.base.CloseIdleConnections()
	// Not started: both backends stay pending and take calls, at random.
	p, err := New(Config{
		Backends: []bulwark.Endpoint{{Addr: dead.addr}, {Addr: good.addr}}, Algorithm: balancer.Random,
		RetryDelay: func(int) time.Duration { return 0 }, Transport: count, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	front := httptest.NewServer(p.Handler())
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	// POSTs without a key, with a body of known length and a chunked one:
	// neither is kept in memory, and both go again, whole, to the good
	// backend when the dead one refused the connection.
	refused := 0
	for i := 0; refused < 3; i++ {
		if i == 200 {
			t.Fatalf("after %d POSTs, %d met the dead backend first; want 3", i, refused)
		}
		id := fmt.Sprintf("post-%d", i)
		want := strings.Repeat(id, 100)
		var body io.Reader = strings.NewReader(want)
		if i%2 == 1 {
			body = io.MultiReader(body) // no length: sent chunked
		}
		req, _ := http.NewRequest(http.MethodPost, front.URL+"/orders", body)
		req.Header.Set("X-Test-Id", id)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		tries := count.take()
		if tries[dead.addr] > 0 {
			refused++
		}
		n, got := good.seen(id)
		if resp.StatusCode != http.StatusOK || n != 1 || got != want {
			t.Fatalf("POST %d (attempts %v) = %d, the good backend saw it %d times with %d of %d bytes; want 200, once, all of them",
				i, tries, resp.StatusCode, n, len(got), len(want))
		}
	}
}

func TestBufferedBodyGoesBackToThePoolWhenEveryReaderIsClosed(t *testing.T) {
	p, err := New(Config{Backends: []bulwark.Endpoint{{Addr: "127.0.0.1:1"}}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	req := httptest.NewRequest(http.MethodPut, "/x", strings.NewReader("payload"))
	done, err := p.prepareBody(req)
	if err != nil || done == nil || req.GetBody == nil {
		t.Fatalf("prepareBody of a PUT = %v, %v; want a kept body", done != nil, err)
	}
	first, err := req.GetBody()
	if err != nil {
		t.Fatal(err)
	}
	second, err := req.GetBody()
	if err != nil {
		t.Fatal(err)
	}
	b := first.(*bodyReader).b
	for _, r := range []io.Reader{req.Body, first, second} {
		if got, _ := io.ReadAll(r); string(got) != "payload" {
			t.Fatalf("a reader of the kept body read %q, want %q", got, "payload")
		}
	}
	first.Close()
	done() // the request is over; a hedge called off still holds a reader
	if b.buf == nil {
		t.Fatalf("the buffer went back to the pool while a reader was open")
	}
	if r, err := req.GetBody(); err == nil {
		t.Fatalf("GetBody after the request is over = %v, nil; want an error", r)
	}
	second.Close()
	second.Close() // a second Close releases nothing more
	if b.buf != nil {
		t.Fatalf("the buffer did not go back to the pool once every reader was closed")
	}
}
