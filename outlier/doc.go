// Package outlier ejects the endpoints whose real calls fail (passive health
// checking, as Envoy's outlier detection does).
//
// A [Detector] is fed every call's outcome with Record, and applies the
// [Rules] selected in its [Config]: consecutive failures, consecutive gateway
// failures, success rate and failure percentage, with ejection times that
// grow with each ejection and a cap on the share of ejected endpoints.
//
// A Detector is a balancer.Judge: among the Followers of a balancer, it
// follows its endpoint set, is fed from Pick.Done, and tells the balancer
// which endpoints are ejected:
//
//	od, err := outlier.New(outlier.Config{AlwaysEjectOne: true})
//	lb, err := balancer.New(balancer.Config{Endpoints: eps, Followers: []balancer.Follower{od}})
//	err = od.Start(ctx) // evaluates the rate-based rules every Interval
//	defer od.Close()
//
// Standalone, the caller calls SetEndpoints and Record, and a [Listener]
// hears of the ejections.
//
// Conventions, as in every bulwark package: New never starts a goroutine;
// Start starts the evaluation loop (ErrStarted on a second call, ErrClosed
// after Close) and Close stops it and waits for it; EvaluateAt runs one
// evaluation on the caller's goroutine. Configuration errors wrap
// [ErrInvalidConfig]. Package outlier imports only package bulwark.
package outlier
