package compose

import (
	"context"
	"testing"
	"unsafe"
)

func TestBudgetHook(t *testing.T) {
	id := unsafe.Pointer(new(int))
	var ran bool
	var b Budgeted = NewBudgetHook(id, func(ctx context.Context, op func(context.Context) error) error {
		ran = true
		return op(ctx)
	})
	if BudgetID(b) != id {
		t.Errorf("BudgetID = %p, want %p", BudgetID(b), id)
	}
	var called bool
	if err := DoSpending(b, context.Background(), func(context.Context) error { called = true; return nil }); err != nil || !ran || !called {
		t.Errorf("DoSpending = %v, hook ran %v, op ran %v; want nil, true, true", err, ran, called)
	}
}

func TestNoEscapeFunc(t *testing.T) {
	n := 0
	f := func(context.Context) error { n++; return nil }
	if err := NoEscapeFunc(&f)(context.Background()); err != nil || n != 1 {
		t.Errorf("NoEscapeFunc(&f)() ran f %d times, want once", n)
	}
	var s Sync = SyncMarker{}
	s.syncMarker()
}
