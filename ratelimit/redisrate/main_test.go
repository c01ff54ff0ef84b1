package redisrate

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	// The outage tests make the client log every failed dial; the errors
	// they check are the ones the Limiter returns.
	redis.SetLogger(quietLogger{})
	goleak.VerifyTestMain(m)
}
