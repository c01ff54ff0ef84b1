// The smoke program of github.com/bulwark-go/bulwark/otelbulwark, built and
// run by releasecheck from a fresh module.
package main

import (
	"fmt"
	"os"

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
	fmt.Println("otelbulwark: observed one event")
}
