package compose

import (
	"sync"
	"testing"
	"unsafe"
)

func TestDepositsClaim(t *testing.T) {
	var d Deposits
	a, b := new(int), new(int)
	if !d.Claim(unsafe.Pointer(a)) {
		t.Fatal("first Claim(a) = false, want true")
	}
	if d.Claim(unsafe.Pointer(a)) {
		t.Error("second Claim(a) = true, want false")
	}
	if !d.Claim(unsafe.Pointer(b)) || d.Claim(unsafe.Pointer(b)) {
		t.Error("Claim(b) twice did not give true, then false")
	}
	// More budgets than slots: the extra ones always claim.
	var full Deposits
	ids := make([]*int, len(full.ids)+1)
	for i := range ids {
		ids[i] = new(int)
		if !full.Claim(unsafe.Pointer(ids[i])) {
			t.Fatalf("Claim of budget %d = false, want true", i)
		}
	}
	if !full.Claim(unsafe.Pointer(ids[len(ids)-1])) {
		t.Error("Claim of a budget beyond the slots = false, want true every time")
	}
	if full.Claim(unsafe.Pointer(ids[0])) {
		t.Error("Claim of a recorded budget = true, want false")
	}
}

func TestDepositsClaimConcurrentSafe(t *testing.T) {
	for range 100 {
		var d Deposits
		ids := []*int{new(int), new(int), new(int)}
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			wins = map[*int]int{}
		)
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := ids[g%len(ids)]
				if d.Claim(unsafe.Pointer(id)) {
					mu.Lock()
					wins[id]++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		for i, id := range ids {
			if wins[id] != 1 {
				t.Fatalf("budget %d claimed %d times, want once", i, wins[id])
			}
		}
	}
}
