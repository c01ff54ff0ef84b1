// Package notify delivers the changes that a component finds under its own
// lock (an endpoint's health, an ejection) to its listener and Observer,
// outside that lock and in order. The active checker and the outlier detector
// share it.
package notify

import (
	"sync"

	"github.com/bulwark-go/bulwark"
)

// Notice is one change for a listener and, when it carries an event, for an
// Observer.
type Notice struct {
	Ep      bulwark.Endpoint
	On      bool // the new state: healthy, or ejected
	Listen  bool // call the listener
	Event   bulwark.Event
	Observe bool // pass Event to the Observer
}

// Notifier delivers notices in the order they were queued, outside the
// owner's lock, from one goroutine at a time. Queue and the other fields are
// guarded by the owner's mutex.
type Notifier struct {
	Queue      []Notice
	spare      []Notice
	delivering bool
}

// Flush delivers every queued notice, calling listen (if not nil) and obs
// (if not nil). Call it with mu not held. If another goroutine is
// delivering, that goroutine delivers what this one queued.
func (n *Notifier) Flush(mu *sync.Mutex, listen func(bulwark.Endpoint, bool), obs bulwark.Observer) {
	mu.Lock()
	if n.delivering || len(n.Queue) == 0 {
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
	for len(n.Queue) > 0 {
		batch := n.Queue
		n.Queue = n.spare[:0]
		mu.Unlock()
		locked = false
		for i := range batch {
			nt := &batch[i]
			if nt.Listen && listen != nil {
				listen(nt.Ep, nt.On)
			}
			if nt.Observe && obs != nil {
				obs.Observe(nt.Event)
			}
			*nt = Notice{}
		}
		mu.Lock()
		locked = true
		n.spare = batch[:0]
	}
}

// Idle reports whether no notice is queued or being delivered. Call it with
// the owner's mutex held.
func (n *Notifier) Idle() bool { return !n.delivering && len(n.Queue) == 0 }
