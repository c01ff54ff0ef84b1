package breaker

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"
)

// checkNoLeak returns a function that fails t if goroutines started after the
// call are still running when it is called, after giving them a second to
// end. (go.uber.org/goleak is not a dependency of the core module.)
//
//	defer checkNoLeak(t)()
func checkNoLeak(t *testing.T) func() {
	t.Helper()
	before := goroutineIDs()
	return func() {
		t.Helper()
		var extra []string
		for deadline := time.Now().Add(time.Second); ; {
			extra = extra[:0]
			for id, stack := range goroutineStacks() {
				if _, ok := before[id]; !ok {
					extra = append(extra, stack)
				}
			}
			if len(extra) == 0 || time.Now().After(deadline) {
				break
			}
			runtime.Gosched()
			time.Sleep(5 * time.Millisecond) // polling for exits, not waiting on breaker time
		}
		if len(extra) > 0 {
			t.Errorf("%d goroutines leaked:\n%s", len(extra), strings.Join(extra, "\n\n"))
		}
	}
}

func goroutineIDs() map[string]string { return goroutineStacks() }

func goroutineStacks() map[string]string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	out := map[string]string{}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		head, _, _ := strings.Cut(string(g), "[")
		if strings.HasPrefix(head, "goroutine ") {
			out[strings.TrimSpace(head)] = string(g)
		}
	}
	return out
}
