// Package outlier ejects the endpoints whose real calls fail (passive health
// checking, as Envoy's outlier detection does).
//
// A [Detector] is fed every call's outcome with [Detector.Record], and
// applies the
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
// Standalone, the caller calls [Detector.SetEndpoints] and Record, and a
// [Listener] hears of the ejections. Events ([Config].Observer):
// EventEjected and EventUnejected.
//
// Conventions, as in every bulwark package: [New] never starts a goroutine;
// [Detector.Start] starts the evaluation loop ([ErrStarted] on a second call,
// [ErrClosed] after Close) and [Detector.Close] stops it and waits for it;
// [Detector.EvaluateAt] runs one evaluation on the caller's goroutine.
// Configuration errors wrap [ErrInvalidConfig]. Of bulwark's packages,
// outlier imports only the root.
package outlier
