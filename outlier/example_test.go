package outlier_test

import (
	"fmt"
	"time"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/bulwarktest"
	"github.com/bulwark-go/bulwark/outlier"
)

// A Detector fed with call outcomes ejects a backend after five
// failures in a row, and brings it back when its ejection time ends.
func ExampleDetector() {
	clk := bulwarktest.NewClock(time.Time{})
	od, err := outlier.New(outlier.Config{
		MaxEjectionPercent: 50,
		Clock:              clk,
		Observer: bulwark.ObserverFunc(func(e bulwark.Event) {
			fmt.Println(e.Kind, e.Endpoint.Addr, e.Reason, e.Delay)
		}),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	a, b := bulwark.Endpoint{Addr: "10.0.0.1:80"}, bulwark.Endpoint{Addr: "10.0.0.2:80"}
	for range 5 {
		od.Record(a, bulwark.Success, false)
		od.Record(b, bulwark.Failure, true) // e.g. a 503
	}
	fmt.Println("b ejected:", od.Ejected(b))
	clk.Advance(30 * time.Second)
	od.EvaluateAt(clk.Now()) // what the goroutine of Start does every Interval
	fmt.Println("b ejected:", od.Ejected(b))
	// Output:
	// ejected 10.0.0.2:80 consecutive_failures 30s
	// b ejected: true
	// unejected 10.0.0.2:80 expired 0s
	// b ejected: false
}
