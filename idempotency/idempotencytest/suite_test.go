package idempotencytest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/idempotency"
	"github.com/bulwark-go/bulwark/idempotency/idempotencytest"
)

// broken is a MemoryStore with one defect, named by flaw.
type broken struct {
	*idempotency.MemoryStore
	flaw string
}

func (b *broken) Claim(ctx context.Context, key string, fp []byte, lease time.Duration) (idempotency.Claim, error) {
	switch b.flaw {
	case "claim-always-wins":
		c, err := b.MemoryStore.Claim(ctx, key, fp, lease)
		if err == nil && !c.Won {
			c = idempotency.Claim{Won: true, Token: c.Record.Token}
		}
		return c, err
	case "lease-never-ends":
		lease *= 1000
	case "ignores-ctx":
		ctx = context.Background()
	}
	return b.MemoryStore.Claim(ctx, key, fp, lease)
}

func (b *broken) Complete(ctx context.Context, key string, token uint64, value []byte, retention time.Duration) error {
	switch b.flaw {
	case "no-fencing":
		if err := b.MemoryStore.Complete(ctx, key, token, value, retention); !errors.Is(err, idempotency.ErrFenced) {
			return err
		}
		return nil // pretends the stale write landed
	case "retention-ignored":
		retention *= 1000
	case "truncates-values":
		if len(value) > 1<<16 {
			value = value[:1<<16]
		}
	}
	return b.MemoryStore.Complete(ctx, key, token, value, retention)
}

func (b *broken) Extend(ctx context.Context, key string, token uint64, lease time.Duration) error {
	switch b.flaw {
	case "extend-ignored":
		return nil // pretends to renew
	case "extend-unfenced":
		// Renews whatever holds the key, even a claim that is not the
		// caller's, and never refuses.
		if r, err := b.MemoryStore.Get(ctx, key); err == nil && !r.Completed {
			token = r.Token
		}
		_ = b.MemoryStore.Extend(ctx, key, token, lease)
		return nil
	}
	return b.MemoryStore.Extend(ctx, key, token, lease)
}

func (b *broken) Release(ctx context.Context, key string, token uint64) error {
	if b.flaw == "release-ignored" {
		return nil
	}
	return b.MemoryStore.Release(ctx, key, token)
}

const flawEnv = "IDEMPOTENCYTEST_FLAW"

// TestRunStoreChild runs the suite against a store with the flaw named in
// the environment; TestRunStoreCatchesFlaws runs it in a child process and
// expects it to fail. Run directly, it checks the flawless store.
func TestRunStoreChild(t *testing.T) {
	flaw := os.Getenv(flawEnv)
	idempotencytest.RunStore(t, func(t *testing.T, clk bulwark.Clock) idempotency.Store {
		s, err := idempotency.NewMemoryStore(idempotency.MemoryConfig{Clock: clk, JanitorInterval: -1})
		if err != nil {
			t.Fatalf("NewMemoryStore: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return &broken{MemoryStore: s, flaw: flaw}
	})
}

func TestRunStoreCatchesFlaws(t *testing.T) {
	if os.Getenv(flawEnv) != "" {
		return // in a child
	}
	tests := []struct {
		flaw        string
		wantSubtest string // a subtest that must fail
	}{
		{"claim-always-wins", "ConcurrentClaimsConcurrentSafe"},
		{"lease-never-ends", "LeaseExpiryAndTakeover"},
		{"ignores-ctx", "ContextCanceled"},
		{"no-fencing", "FencingAfterTakeover"},
		{"retention-ignored", "RetentionExpiry"},
		{"truncates-values", "LargeRecord"},
		{"release-ignored", "ReleaseThenReclaim"},
		{"extend-ignored", "ExtendLease"},
		{"extend-ignored", "EngineClockSkew"},
		{"extend-unfenced", "ExtendFenced"},
	}
	for _, tt := range tests {
		t.Run(tt.flaw, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestRunStoreChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), flawEnv+"="+tt.flaw)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("RunStore against a store with flaw %q: err = %v, want a failing run; output:\n%s", tt.flaw, err, out)
			}
			if want := "--- FAIL: TestRunStoreChild/" + tt.wantSubtest; !strings.Contains(string(out), want) {
				t.Fatalf("RunStore against a store with flaw %q: output lacks %q:\n%s", tt.flaw, want, out)
			}
		})
	}
}
