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
//   - Op: an operation in a form that needs no closure. Call hands a policy
//     that implements Sync a frame on its own stack, which is how Call over
//     one policy allocates nothing.
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

// Sync is implemented, through an embedded SyncHook, by the policies that run
// op only on the goroutine that called them, never after they return, and
// never keep op.R anywhere but in their own stack frames: breaker.Breaker
// and retry.Policy. For those, Call passes an op.R that points into its own
// stack frame (see NoEscape). A policy that runs op on another goroutine, such as a
// Hedge, must not implement Sync.
type Sync interface {
	doSync(ctx context.Context, op Op) error
}

// DoSync runs op under s.
func DoSync(s Sync, ctx context.Context, op Op) error { return s.doSync(ctx, op) }

// SyncHook makes a policy a Sync without an exported method: the policy
// embeds it through an unexported alias and sets it in its constructor.
type SyncHook struct {
	fn func(context.Context, Op) error
}

// NewSyncHook returns a SyncHook whose DoSync calls fn.
func NewSyncHook(fn func(ctx context.Context, op Op) error) SyncHook { return SyncHook{fn: fn} }

func (h SyncHook) doSync(ctx context.Context, op Op) error { return h.fn(ctx, op) }

// Op is an operation: F when it is set, else R.
type Op struct {
	F func(context.Context) error
	R Runner
}

// Runner is an operation as a method, for a caller that keeps the
// operation's state in a frame: a generic function value would need a closure
// (for its dictionary), an interface holding a pointer needs none.
type Runner interface {
	Run(ctx context.Context) error
}

// Call runs the operation.
func (o Op) Call(ctx context.Context) error {
	if o.F != nil {
		return o.F(ctx)
	}
	return o.R.Run(ctx)
}

// NoEscape hides p from escape analysis, so that a frame on the caller's
// stack whose address goes into an Op stays on the stack. It is sound only
// for an Op given to a Sync policy, which uses it on the same goroutine and
// not after it returns: the stack may move, but the runtime adjusts every
// pointer that the goroutine's own frames hold into it. It is the runtime's
// noescape, written so that checkptr (under -race) accepts it.
//
//go:nosplit
func NoEscape(p unsafe.Pointer) unsafe.Pointer {
	x := uintptr(p)
	return *(*unsafe.Pointer)(unsafe.Pointer(&x))
}
