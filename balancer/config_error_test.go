package balancer_test

import (
	"errors"
	"testing"

	"github.com/bulwark-go/bulwark/balancer"
)

func TestConfigErrorsWrapErrInvalidConfig(t *testing.T) {
	for _, cfg := range []balancer.Config{
		{Algorithm: 200},
		{SlowStart: -1},
		{PickSample: -1},
		{Followers: []balancer.Follower{nil}},
	} {
		if _, err := balancer.New(cfg); !errors.Is(err, balancer.ErrInvalidConfig) {
			t.Errorf("New(%+v): err = %v, want ErrInvalidConfig", cfg, err)
		}
	}
}
