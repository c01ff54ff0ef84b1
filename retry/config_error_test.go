package retry

import (
	"errors"
	"testing"
)

func TestConfigErrorsWrapErrInvalidConfig(t *testing.T) {
	errs := map[string]error{}
	_, errs["New MaxAttempts"] = New(Config{MaxAttempts: -1})
	_, errs["New Backoff"] = New(Config{Backoff: Backoff{Base: -1}})
	_, errs["NewBudget"] = NewBudget(BudgetConfig{Ratio: -1})
	_, errs["NewHedge"] = NewHedge(HedgeConfig{Delay: -1})
	for name, err := range errs {
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
	}
}
