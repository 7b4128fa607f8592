// Package buildinfo tells which build of dronelink is running, from the information the Go
// toolchain embeds in every binary, so no version needs to be stamped by hand. A release
// build may still stamp one (see Stamp).
package buildinfo

import (
	"fmt"
	"runtime/debug"
)

// Stamp is the version stamped at link time, for release builds:
//
//	go build -ldflags "-X github.com/dronelink/dronelink/internal/buildinfo.Stamp=v1.2.0" ./cmd/...
//
// (make release does this with its RELEASE_VERSION). When set, it replaces the module
// version in Version; the VCS revision and Go version are still added when the binary
// carries them. Empty in ordinary builds.
var Stamp string

// Version is the module version ("(devel)" for a local build), or Stamp when one was
// stamped, with the VCS revision and a "+dirty" mark when the work tree had uncommitted
// changes.
func Version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		if Stamp != "" {
			return Stamp
		}
		return "unknown"
	}
	version := info.Main.Version
	if Stamp != "" {
		version = Stamp
	}
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
		return fmt.Sprintf("%s (%s%s, %s)", version, revision, modified, info.GoVersion)
	}
	return fmt.Sprintf("%s (%s)", version, info.GoVersion)
}
