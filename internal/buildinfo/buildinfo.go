// Package buildinfo tells which build of dronelink is running: the version the build
// stamped from git (make build does), or else what the Go toolchain embeds in every binary.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is stamped by the build, from "git describe --tags --always --dirty" in the
// Makefile:
//
//	go build -ldflags "-X github.com/dronelink/dronelink/internal/buildinfo.version=v1.2.0-3-gabc1234"
//
// It names the build even where the toolchain records no VCS information (-buildvcs=false,
// a git worktree, a source tarball). Empty in a plain "go build".
var version string

// Version is the stamped version, or else the module version ("(devel)" for a local build)
// with the VCS revision and a "+dirty" mark when the work tree had uncommitted changes;
// then the Go version in parentheses: "v1.2.0-3-gabc1234 (go1.26.0)".
func Version() string {
	if version != "" {
		return fmt.Sprintf("%s (%s)", version, runtime.Version())
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	moduleVersion := info.Main.Version
	var revision, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if len(revision) > 12 {
		revision = revision[:12]
	}
	if revision != "" {
		return fmt.Sprintf("%s (%s%s, %s)", moduleVersion, revision, modified, info.GoVersion)
	}
	return fmt.Sprintf("%s (%s)", moduleVersion, info.GoVersion)
}
