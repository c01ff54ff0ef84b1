package healthcheck

import (
	"sync"

	"github.com/bulwark-go/bulwark"
)

// notice is one change for a Listener and, when it carries an event, for an
// Observer.
type notice struct {
	ep      bulwark.Endpoint
	on      bool // healthy
	listen  bool // call the Listener
	event   bulwark.Event
	observe bool // pass event to the Observer
}

// notifier delivers notices in the order they were queued, outside the
// owner's lock, from one goroutine at a time. Its fields are guarded by the
// owner's mutex.
type notifier struct {
	queue      []notice
	spare      []notice
	delivering bool
}

// flush delivers every queued notice. Call it with mu not held. If another
// goroutine is delivering, that goroutine delivers what this one queued.
func (n *notifier) flush(mu *sync.Mutex, l Listener, obs bulwark.Observer) {
	mu.Lock()
	if n.delivering || len(n.queue) == 0 {
		mu.Unlock()
		return
	}
	n.delivering = true
	locked := true
	defer func() { // also after a panic in a callback, with mu not held
		if !locked {
			mu.Lock()
		}
		n.delivering = false
		mu.Unlock()
	}()
	for len(n.queue) > 0 {
		batch := n.queue
		n.queue = n.spare[:0]
		mu.Unlock()
		locked = false
		for i := range batch {
			nt := &batch[i]
			if nt.listen && l != nil {
				l.HealthChanged(nt.ep, nt.on)
			}
			if nt.observe && obs != nil {
				obs.Observe(nt.event)
			}
			*nt = notice{}
		}
		mu.Lock()
		locked = true
		n.spare = batch[:0]
	}
}
