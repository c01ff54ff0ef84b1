// Package compose is the protocol between bulwark.Compose and bulwark.Call
// and the policies of this module. Its types are internal, so only the
// module's own policies take part; any other bulwark.Policy is run through its
// Do method as before.
//
// Two things cross it:
//
//   - Budgets: Compose runs every layer that spends from a retry budget
//     counted by an outer layer without depositing (see Budgeted), so that
//     each budget counts a logical request once.
//   - Sync: a policy that runs op on the caller's goroutine only. Call hands
//     it a closure that stays on Call's stack, which is how Call over one
//     policy allocates nothing.
package compose

import (
	"context"
	"unsafe"
)

// Budgeted is implemented, through an embedded BudgetHook, by the policies
// that deposit into a retry budget: retry.Policy and retry.Hedge. Compose
// knows from BudgetID which layers share a budget, and runs every layer but
// the outermost of each budget through DoSpending, so that the budget counts
// a logical request once however many layers spend from it.
type Budgeted interface {
	budgetID() unsafe.Pointer
	doSpending(ctx context.Context, op func(context.Context) error) error
}

// BudgetID returns the identity of b's budget, nil if it has none.
func BudgetID(b Budgeted) unsafe.Pointer { return b.budgetID() }

// DoSpending runs b as its Do does, but without depositing into its budget:
// an outer layer has counted the request.
func DoSpending(b Budgeted, ctx context.Context, op func(context.Context) error) error {
	return b.doSpending(ctx, op)
}

// BudgetHook makes a policy Budgeted without an exported method: the policy
// embeds it through an unexported alias and sets it in its constructor.
type BudgetHook struct {
	id unsafe.Pointer
	fn func(context.Context, func(context.Context) error) error
}

// NewBudgetHook returns a BudgetHook for the budget whose address is id (nil
// for none) and whose DoSpending calls fn.
func NewBudgetHook(id unsafe.Pointer, fn func(ctx context.Context, op func(context.Context) error) error) BudgetHook {
	return BudgetHook{id: id, fn: fn}
}

func (h BudgetHook) budgetID() unsafe.Pointer { return h.id }

func (h BudgetHook) doSpending(ctx context.Context, op func(context.Context) error) error {
	return h.fn(ctx, op)
}

// Sync is implemented, through an embedded SyncMarker, by the policies whose
// Do runs op only on the goroutine that called it, never after it returns,
// and never keeps op anywhere but in its own stack frames: breaker.Breaker
// and retry.Policy. For those, Call passes a closure that lives in its own
// stack frame (see NoEscapeFunc). A policy that runs op on another goroutine,
// such as a Hedge, must not implement Sync.
type Sync interface {
	syncMarker()
}

// SyncMarker makes a policy a Sync: the policy embeds it, through an
// unexported alias, as its first field (it takes no space).
type SyncMarker struct{}

func (SyncMarker) syncMarker() {}

// NoEscapeFunc returns *f, hiding it from escape analysis, so that a closure
// on the caller's stack stays there when it is passed on. It is sound only
// for a closure given to a Sync policy, which calls it on the same goroutine
// and not after it returns: the stack may move meanwhile, but the runtime
// adjusts every pointer into it that the goroutine's own frames hold. It is
// the runtime's noescape, written so that checkptr (under -race) accepts it.
//
//go:nosplit
func NoEscapeFunc(f *func(context.Context) error) func(context.Context) error {
	x := uintptr(unsafe.Pointer(f))
	return **(**func(context.Context) error)(unsafe.Pointer(&x))
}
