package bulwark_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/bulwark-go/bulwark"
)

// logged is a toy policy that prints around each call.
type logged string

func (l logged) Do(ctx context.Context, op func(context.Context) error) error {
	fmt.Println("enter", string(l))
	defer fmt.Println("leave", string(l))
	return op(ctx)
}

func ExampleCompose() {
	guard := bulwark.Compose(logged("retry"), logged("breaker"))
	_ = guard.Do(context.Background(), func(context.Context) error {
		fmt.Println("call")
		return nil
	})
	// Output:
	// enter retry
	// enter breaker
	// call
	// leave breaker
	// leave retry
}

func ExampleCall() {
	guard := bulwark.Compose(logged("guard"))
	total, err := bulwark.Call(context.Background(), guard, func(context.Context) (int, error) {
		return 42, nil
	})
	fmt.Println(total, err)
	// Output:
	// enter guard
	// leave guard
	// 42 <nil>
}

func ExamplePermanent() {
	errInvalid := errors.New("invalid card number")
	err := fmt.Errorf("charge: %w", bulwark.Permanent(errInvalid))

	fmt.Println(bulwark.IsPermanent(err))
	fmt.Println(errors.Is(err, errInvalid))
	fmt.Println(err)
	// Output:
	// true
	// true
	// charge: invalid card number
}

func ExampleClassify() {
	ctx, cancel := context.WithCancel(context.Background())
	fmt.Println(bulwark.Classify(ctx, nil))
	fmt.Println(bulwark.Classify(ctx, context.DeadlineExceeded))
	cancel()
	fmt.Println(bulwark.Classify(ctx, context.Canceled))
	// Output:
	// success
	// failure
	// neutral
}
