package main

import (
	"fmt"
	"io"
)

// runDemo is replaced when package demo lands.
func runDemo(environ []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "tether demo: not built yet")
	return 1
}
