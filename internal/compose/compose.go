// Package compose is the protocol between bulwark.Compose and bulwark.Call
// and the policies of this module. Its types are internal, so only the
// module's own policies take part; any other bulwark.Policy is run through its
// Do method as before.
//
// Two things cross it:
//
//   - Deposits: a composed call carries one set of budget deposits, so that
//     every retry budget counts the logical request once however many retry
//     and hedge layers spend from it. Compose passes the set to each layer
//     that implements Layer.
//   - Op: an operation in a form that needs no closure. Call hands a policy
//     that implements Sync a pointer to a frame on its own stack, which is
//     how Call over one policy allocates nothing.
package compose

import (
	"context"
	"sync/atomic"
	"unsafe"
)

// Layer is implemented by the policies that deposit into a retry budget
// (retry.Policy, retry.Hedge), through an embedded LayerHook. DoComposed runs
// the policy for a call made inside a composed call whose deposits are d: the
// policy deposits into its budget only when d.Claim says it is the first to.
type Layer interface {
	doComposed(ctx context.Context, op func(context.Context) error, d *Deposits) error
}

// DoComposed runs l for one layer of a composed call with deposits d.
func DoComposed(l Layer, ctx context.Context, op func(context.Context) error, d *Deposits) error {
	return l.doComposed(ctx, op, d)
}

// LayerHook makes a policy a Layer without an exported method: the policy
// embeds it through an unexported alias and sets it in its constructor.
type LayerHook struct {
	fn func(context.Context, func(context.Context) error, *Deposits) error
}

// NewLayerHook returns a LayerHook whose DoComposed calls fn.
func NewLayerHook(fn func(ctx context.Context, op func(context.Context) error, d *Deposits) error) LayerHook {
	return LayerHook{fn: fn}
}

func (h LayerHook) doComposed(ctx context.Context, op func(context.Context) error, d *Deposits) error {
	return h.fn(ctx, op, d)
}

// Deposits records the budgets that have counted one logical request. It
// holds up to len(ids) budgets; a call that meets more (no sane composition
// does) deposits into the rest every time. The zero Deposits is empty and
// ready to use; it is safe for concurrent use (hedged attempts claim at the
// same time).
type Deposits struct {
	ids [4]atomic.Uintptr
}

// Claim reports whether the budget identified by id has not counted the
// request yet, and records that it now has. id is the budget's address.
func (d *Deposits) Claim(id unsafe.Pointer) bool {
	v := uintptr(id)
	for i := range d.ids {
		for {
			cur := d.ids[i].Load()
			if cur == v {
				return false
			}
			if cur != 0 {
				break // another budget's slot
			}
			if d.ids[i].CompareAndSwap(0, v) {
				return true
			}
		}
	}
	return true
}

// Sync is implemented, through an embedded SyncHook, by the policies that run
// op only on the goroutine that called them, never after they return, and
// never keep op.Arg anywhere but in their own stack frames: breaker.Breaker
// and retry.Policy. For those, Call passes op.Arg pointing into its own stack
// frame (see NoEscape). A policy that runs op on another goroutine, such as a
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

// Op is an operation: F when it is set, else Fn called with Arg.
type Op struct {
	F   func(context.Context) error
	Fn  func(context.Context, unsafe.Pointer) error
	Arg unsafe.Pointer
}

// Call runs the operation.
func (o Op) Call(ctx context.Context) error {
	if o.F != nil {
		return o.F(ctx)
	}
	return o.Fn(ctx, o.Arg)
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
