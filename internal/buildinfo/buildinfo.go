// Package buildinfo reads tether's version, Go version and VCS revision
// from the binary's build information (runtime/debug.ReadBuildInfo), for
// `tether version` and the tether_build_info metric (README "Version").
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Info describes one build.
type Info struct {
	// Version is the main module's version as Go stamped it: a release tag
	// (v0.1.0) or, built from a git checkout, Go's pseudo-version
	// (v0.0.0-20261206194735-8b7d76a1b2c3, "+dirty" with uncommitted
	// changes). Where Go stamped none ("(devel)": go run, or a source tree
	// without .git as in a container build) it is "v" + the release given
	// to Read + "+devel".
	Version string
	// GoVersion is the toolchain that built the binary (go1.26.0).
	GoVersion string
	// Revision is the VCS commit, with "+dirty" when the tree had
	// uncommitted changes; "unknown" without VCS information.
	Revision string
}

// devel is what Go reports as the main module's version without a stamp.
const devel = "(devel)"

// Read returns the running binary's Info. release is the version the
// source tree declares (the VERSION file), used when Go stamped none.
func Read(release string) Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return FromBuildInfo(&debug.BuildInfo{GoVersion: runtime.Version(), Main: debug.Module{Version: devel}}, release)
	}
	return FromBuildInfo(bi, release)
}

// FromBuildInfo is Read over given build information.
func FromBuildInfo(bi *debug.BuildInfo, release string) Info {
	in := Info{Version: bi.Main.Version, GoVersion: bi.GoVersion, Revision: "unknown"}
	if in.Version == "" || in.Version == devel {
		in.Version = devel
		if release != "" {
			in.Version = "v" + release + "+devel"
		}
	}
	if in.GoVersion == "" {
		in.GoVersion = runtime.Version()
	}
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && in.Revision != "unknown" {
		in.Revision += "+dirty"
	}
	return in
}

// String is the one-line form `tether version` prints.
func (in Info) String() string {
	return fmt.Sprintf("tether %s (%s, revision %s)", in.Version, in.GoVersion, in.Revision)
}
