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

type frame struct{ n int }

func (f *frame) Run(context.Context) error { f.n++; return nil }

func TestOpCall(t *testing.T) {
	var n int
	if err := (Op{F: func(context.Context) error { n++; return nil }}).Call(context.Background()); err != nil || n != 1 {
		t.Errorf("Op{F}.Call ran F %d times, want once", n)
	}
	f := frame{}
	r := (*frame)(NoEscape(unsafe.Pointer(&f)))
	if err := (Op{R: r}).Call(context.Background()); err != nil || f.n != 1 {
		t.Errorf("Op{R}.Call ran R %d times, want once", f.n)
	}
}
