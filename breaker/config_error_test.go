package breaker_test

import (
	"errors"
	"testing"

	"github.com/bulwark-go/bulwark/breaker"
)

func TestConfigErrorsWrapErrInvalidConfig(t *testing.T) {
	if _, err := breaker.New(breaker.Config{WindowCalls: -1}); !errors.Is(err, breaker.ErrInvalidConfig) {
		t.Errorf("New with a negative WindowCalls: err = %v, want ErrInvalidConfig", err)
	}
	if _, err := breaker.NewGroup(breaker.GroupConfig{MaxKeys: -1}); !errors.Is(err, breaker.ErrInvalidConfig) {
		t.Errorf("NewGroup with a negative MaxKeys: err = %v, want ErrInvalidConfig", err)
	}
}
