package main

import (
	_ "embed"
	"fmt"
	"io"
	"strings"

	"github.com/tether-proxy/tether/internal/buildinfo"
)

// releaseVersion is the VERSION file: the release this source tree is,
// also the version of the npm package in client/ (README "Version").
//
//go:embed VERSION
var releaseVersion string

// build describes this binary (README "Version").
func build() buildinfo.Info { return buildinfo.Read(strings.TrimSpace(releaseVersion)) }

// printVersion is `tether version`.
func printVersion(w io.Writer) int {
	fmt.Fprintln(w, build())
	return 0
}
