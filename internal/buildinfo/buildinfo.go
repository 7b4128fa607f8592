// Package buildinfo tells which build of dronelink is running, from the information the Go
// toolchain embeds in every binary, so no version needs to be stamped by hand.
package buildinfo

import (
	"fmt"
	"runtime/debug"
)

// Version is the module version ("(devel)" for a local build) with the VCS revision and a
// "+dirty" mark when the work tree had uncommitted changes.
func Version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	version := info.Main.Version
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
