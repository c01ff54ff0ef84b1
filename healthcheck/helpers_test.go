package healthcheck

import (
	"fmt"
	"sync"

	"github.com/bulwark-go/bulwark"
)

// recorder is a Listener and an Observer that keeps what it is told.
type recorder struct {
	mu     sync.Mutex
	log    []string
	events []bulwark.Event
	ch     chan string // if not nil, every log line is also sent here
}

func newRecorder() *recorder { return &recorder{ch: make(chan string, 100000)} }

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.log = append(r.log, s)
	r.mu.Unlock()
	if r.ch != nil {
		r.ch <- s
	}
}

func (r *recorder) HealthChanged(ep bulwark.Endpoint, healthy bool) {
	r.add(fmt.Sprintf("health %s %v", ep.Addr, healthy))
}

func (r *recorder) EjectionChanged(ep bulwark.Endpoint, ejected bool) {
	r.add(fmt.Sprintf("ejection %s %v", ep.Addr, ejected))
}

func (r *recorder) Observe(e bulwark.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.log...)
}

func (r *recorder) eventsOf(k bulwark.EventKind) []bulwark.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []bulwark.Event
	for _, e := range r.events {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

func ep(i int) bulwark.Endpoint { return bulwark.Endpoint{Addr: fmt.Sprintf("10.0.0.%d:80", i)} }
