package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// The container image (Dockerfile) promises a static, trimmed binary that
// runs as a non-root user in an image with nothing else in it (distroless
// static). No Docker engine is available here, so this checks those
// promises directly: it builds with the Dockerfile's own flags, checks the
// ELF has no interpreter (no libc needed), and, as root, runs it chrooted
// into an empty directory as the distroless nonroot user (65532).
func TestImageBinaryIsStaticAndRunsAlone(t *testing.T) {
	df, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	const buildLine = `CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/tether .`
	for _, want := range []string{buildLine, "USER nonroot", "EXPOSE 8080 9090", `HEALTHCHECK`, `"healthcheck"`} {
		if !strings.Contains(string(df), want) {
			t.Fatalf("Dockerfile lacks %q", want)
		}
	}
	root := t.TempDir()
	bin := filepath.Join(root, "tether")
	gocmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	build := exec.Command(gocmd, "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("binary has an ELF interpreter: not static")
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("not root: cannot chroot to check the binary runs alone")
	}
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/tether", "--help")
	cmd.Dir = "/"
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     root,
		Credential: &syscall.Credential{Uid: 65532, Gid: 65532},
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in an empty root as uid 65532: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "TETHER_UPSTREAM_URL") {
		t.Fatalf("unexpected --help output:\n%s", out)
	}
}
