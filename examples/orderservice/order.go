package orderservice

import (
	"errors"
	"fmt"
	"time"
)

// State is where an order is in its life: created → paid → shipped, or
// cancelled from created or paid.
type State string

// The states of an order.
const (
	Created   State = "created"
	Paid      State = "paid"
	Shipped   State = "shipped"
	Cancelled State = "cancelled"
)

// transitions lists, for each action, the states it may start from and the
// state it leads to.
var transitions = map[string]struct {
	from []State
	to   State
}{
	"pay":    {from: []State{Created}, to: Paid},
	"ship":   {from: []State{Paid}, to: Shipped},
	"cancel": {from: []State{Created, Paid}, to: Cancelled},
}

// Item is one line of an order.
type Item struct {
	SKU        string `json:"sku"`
	Quantity   int    `json:"quantity"`
	PriceCents int64  `json:"price_cents"`
}

// Order is the aggregate the service keeps. Version increases by one with
// every change, and every change is a compare-and-set on it.
type Order struct {
	ID          string    `json:"id"`
	Customer    string    `json:"customer"`
	Items       []Item    `json:"items"`
	AmountCents int64     `json:"amount_cents"`
	Currency    string    `json:"currency"`
	State       State     `json:"state"`
	Version     int64     `json:"version"`
	Partition   int       `json:"partition"`
	PaymentID   string    `json:"payment_id,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Errors of the order domain, mapped to HTTP statuses by the server.
var (
	ErrNotFound        = errors.New("order not found")
	ErrVersionConflict = errors.New("order was changed concurrently")
	ErrBadTransition   = errors.New("transition not allowed from the order's state")
	ErrInvalid         = errors.New("invalid order")
)

// next returns the state that action leads to from s.
func next(s State, action string) (State, error) {
	t, ok := transitions[action]
	if !ok {
		return "", fmt.Errorf("%w: unknown action %q", ErrBadTransition, action)
	}
	for _, f := range t.from {
		if f == s {
			return t.to, nil
		}
	}
	return "", fmt.Errorf("%w: cannot %s an order that is %s", ErrBadTransition, action, s)
}

// NewOrderRequest is the body of POST /orders.
type NewOrderRequest struct {
	Customer string `json:"customer"`
	Items    []Item `json:"items"`
	Currency string `json:"currency"`
}

// validate checks the request and returns the order's amount.
func (r NewOrderRequest) validate() (int64, error) {
	if r.Customer == "" || len(r.Customer) > 128 {
		return 0, fmt.Errorf("%w: customer must be 1 to 128 characters", ErrInvalid)
	}
	if len(r.Items) == 0 || len(r.Items) > 100 {
		return 0, fmt.Errorf("%w: an order has 1 to 100 items", ErrInvalid)
	}
	if r.Currency == "" {
		return 0, fmt.Errorf("%w: currency is required", ErrInvalid)
	}
	var total int64
	for i, it := range r.Items {
		if it.SKU == "" || it.Quantity <= 0 || it.Quantity > 10000 || it.PriceCents < 0 || it.PriceCents > 1e9 {
			return 0, fmt.Errorf("%w: item %d needs a sku, a quantity in 1..10000 and a price in 0..1e9 cents", ErrInvalid, i)
		}
		total += int64(it.Quantity) * it.PriceCents
	}
	return total, nil
}
