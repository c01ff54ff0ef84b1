package limit_test

import (
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/bulwark-go/bulwark"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder is an Observer that keeps the events.
type recorder struct {
	mu     sync.Mutex
	events []bulwark.Event
}

func (r *recorder) Observe(e bulwark.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) kinds(k bulwark.EventKind) []bulwark.Event {
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
