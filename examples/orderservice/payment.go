package orderservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/retry"
)

// errPaymentDeclined is a 4xx from the payment provider: no retry fixes it.
var errPaymentDeclined = errors.New("payment declined")

// charge is the provider's answer.
type charge struct {
	ID string `json:"id"`
}

// paymentClient calls the payment provider under a guard, Compose(retry,
// breaker), forwarding an idempotency key so that its retries never charge
// twice.
type paymentClient struct {
	base  string
	http  *http.Client
	clk   bulwark.Clock
	guard bulwark.Policy
}

func (c *paymentClient) charge(ctx context.Context, key string, o Order) (charge, error) {
	body, err := json.Marshal(map[string]any{"order_id": o.ID, "amount_cents": o.AmountCents, "currency": o.Currency})
	if err != nil {
		return charge{}, err
	}
	return bulwark.Call(ctx, c.guard, func(ctx context.Context) (charge, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/charges", bytes.NewReader(body))
		if err != nil {
			return charge{}, bulwark.Permanent(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		resp, err := c.http.Do(req)
		if err != nil {
			return charge{}, err
		}
		defer resp.Body.Close()
		if rerr := retry.ResponseError(resp, c.clk.Now()); rerr != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			return charge{}, rerr
		}
		if resp.StatusCode >= 400 {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
			if resp.StatusCode >= 500 {
				return charge{}, fmt.Errorf("payment provider: %s: %s", resp.Status, bytes.TrimSpace(msg))
			}
			return charge{}, bulwark.Permanent(fmt.Errorf("%w: %s: %s", errPaymentDeclined, resp.Status, bytes.TrimSpace(msg)))
		}
		var ch charge
		if err := json.NewDecoder(resp.Body).Decode(&ch); err != nil {
			return charge{}, fmt.Errorf("payment provider: decoding the charge: %w", err)
		}
		return ch, nil
	})
}
