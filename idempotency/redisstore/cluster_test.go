package redisstore

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/idempotencytest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestClusterConformance runs the conformance suite through a
// redis.ClusterClient when BULWARK_REDIS_CLUSTER_ADDRS names the nodes of a
// Redis Cluster (comma-separated host:port). .ci/run starts a three-node
// cluster and sets it; without the variable the test skips, saying so,
// except under CI=true, where a missing cluster fails the run.
func TestClusterConformance(t *testing.T) {
	addrs := os.Getenv("BULWARK_REDIS_CLUSTER_ADDRS")
	if addrs == "" && os.Getenv("CI") == "true" {
		t.Fatal("BULWARK_REDIS_CLUSTER_ADDRS is unset under CI=true: .ci/run must start a Redis Cluster")
	}
	if addrs == "" {
		t.Skip("BULWARK_REDIS_CLUSTER_ADDRS is unset: skipping the Redis Cluster test (set it to the comma-separated nodes of a cluster)")
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ","), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, rdb.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error { return c.Ping(ctx).Err() }))
	idempotencytest.RunStore(t, func(t *testing.T, clk bulwark.Clock) idempotency.Store {
		s, err := New(Config{Client: rdb, Prefix: "bulwarktest:cluster:", TestClock: clk})
		require.NoError(t, err)
		return s
	})
}
