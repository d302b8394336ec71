package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	t.Parallel()
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	for _, tc := range []struct {
		name    string
		bi      debug.BuildInfo
		release string
		want    Info
	}{
		{"release tag", debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v0.1.0"}, Settings: vcs("8b7d76af", "false")}, "0.1.0",
			Info{Version: "v0.1.0", GoVersion: "go1.26.0", Revision: "8b7d76af"}},
		{"checkout, modified", debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v0.0.0-20261206194735-8b7d76af861b+dirty"}, Settings: vcs("8b7d76af861b", "true")}, "0.1.0",
			Info{Version: "v0.0.0-20261206194735-8b7d76af861b+dirty", GoVersion: "go1.26.0", Revision: "8b7d76af861b+dirty"}},
		{"go run: no stamp", debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}}, "0.1.0",
			Info{Version: "v0.1.0+devel", GoVersion: "go1.26.0", Revision: "unknown"}},
		{"no stamp, no release", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "",
			Info{Version: "(devel)", GoVersion: runtime.Version(), Revision: "unknown"}},
	} {
		if got := FromBuildInfo(&tc.bi, tc.release); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if got, want := (Info{Version: "v0.1.0", GoVersion: "go1.26.0", Revision: "8b7d76af"}).String(), "tether v0.1.0 (go1.26.0, revision 8b7d76af)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
