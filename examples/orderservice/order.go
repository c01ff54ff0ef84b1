package orderservice

import (
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode"
	"unicode/utf8"
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
// every change, and every change is a compare-and-set on it. An order belongs
// to one tenant, the caller that created it; IdempotencyKey is the key it was
// created under, unique within its tenant.
type Order struct {
	ID             string    `json:"id"`
	Tenant         string    `json:"tenant"`
	IdempotencyKey string    `json:"idempotency_key,omitempty"`
	Customer       string    `json:"customer"`
	Items          []Item    `json:"items"`
	AmountCents    int64     `json:"amount_cents"`
	Currency       string    `json:"currency"`
	State          State     `json:"state"`
	Version        int64     `json:"version"`
	Partition      int       `json:"partition"`
	PaymentID      string    `json:"payment_id,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
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

// Limits of a NewOrderRequest.
const (
	maxCustomer = 128 // bytes
	maxSKU      = 64  // bytes
	maxItems    = 100
	maxQuantity = 10000
	maxPrice    = 1e9 // cents
)

// validate checks the request and returns the order's amount. Every string
// must be valid UTF-8 without control characters (a NUL included), within
// its length limit; the currency is an ISO 4217 code, three capital letters.
func (r NewOrderRequest) validate() (int64, error) {
	if !validText(r.Customer, maxCustomer) {
		return 0, fmt.Errorf("%w: customer must be 1 to %d bytes of text without control characters", ErrInvalid, maxCustomer)
	}
	if len(r.Items) == 0 || len(r.Items) > maxItems {
		return 0, fmt.Errorf("%w: an order has 1 to %d items", ErrInvalid, maxItems)
	}
	if !validCurrency(r.Currency) {
		return 0, fmt.Errorf("%w: currency must be an ISO 4217 code, three capital letters", ErrInvalid)
	}
	var total int64
	for i, it := range r.Items {
		if !validText(it.SKU, maxSKU) {
			return 0, fmt.Errorf("%w: item %d: sku must be 1 to %d bytes of text without control characters", ErrInvalid, i, maxSKU)
		}
		if it.Quantity <= 0 || it.Quantity > maxQuantity || it.PriceCents < 0 || it.PriceCents > maxPrice {
			return 0, fmt.Errorf("%w: item %d needs a quantity in 1..%d and a price in 0..%d cents", ErrInvalid, i, maxQuantity, int64(maxPrice))
		}
		total += int64(it.Quantity) * it.PriceCents
	}
	return total, nil
}

// sameRequest reports whether o is the order that r asks for: what a request
// with the same idempotency key must find.
func (r NewOrderRequest) sameRequest(o Order) bool {
	return o.Customer == r.Customer && o.Currency == r.Currency && slices.Equal(o.Items, r.Items)
}

// validText reports whether s is 1 to max bytes of valid UTF-8 with no
// control characters.
func validText(s string, max int) bool {
	if s == "" || len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if unicode.IsControl(c) || c == utf8.RuneError {
			return false
		}
	}
	return true
}

func validCurrency(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}
