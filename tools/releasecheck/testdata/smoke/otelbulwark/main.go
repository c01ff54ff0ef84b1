// The smoke program of github.com/bulwark-go/bulwark/otelbulwark, built and
// run by releasecheck from a fresh module.
package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/bulwark-go/bulwark"
	"github.com/bulwark-go/bulwark/otelbulwark"
)

func main() {
	o, err := otelbulwark.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var obs bulwark.Observer = o
	obs.Observe(bulwark.Event{Kind: bulwark.EventCall, Component: bulwark.ComponentBreaker, Name: "smoke"})
	// otelbulwark.Version is the meter's instrumentation scope version: it
	// must be the version the module was installed at.
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/bulwark-go/bulwark/otelbulwark" && d.Replace == nil && d.Version != "v"+otelbulwark.Version {
				fmt.Fprintf(os.Stderr, "otelbulwark.Version = %q, but the module is at %s: bump the const with the release\n", otelbulwark.Version, d.Version)
				os.Exit(1)
			}
		}
	}
	fmt.Println("otelbulwark: observed one event")
}
