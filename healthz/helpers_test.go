package healthz

import (
	"sync"

	"github.com/bulwark-go/bulwark"
)

// recorder is an Observer that keeps what it is told.
type recorder struct {
	mu     sync.Mutex
	events []bulwark.Event
}

func newRecorder() *recorder { return &recorder{} }

func (r *recorder) Observe(e bulwark.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
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
