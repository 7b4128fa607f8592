// Package release describes and checks dronelink's release binaries: which targets are
// built (linux/amd64, linux/arm64, linux/arm with GOARM=7), how a binary is named in dist/,
// and what every release binary must be: an ELF executable for its target, statically
// linked (no program interpreter, no shared libraries), stripped (no symbol table),
// built with CGO_ENABLED=0 and -trimpath, stamped with the release version through
// -ldflags -X, and not larger than a size limit.
//
// `make release` builds the binaries and checks them with tools/releasecheck; the e2e tests
// cross-build the daemon the same way (BuildFlags) and check it with Verify before running
// it under qemu-user.
package release

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// MaxSize is the largest a release binary may be, in bytes (issue #14: at most 15 MB).
const MaxSize = 15_000_000

// StampVariable is the variable -ldflags -X sets to the release version.
const StampVariable = "github.com/dronelink/dronelink/internal/buildinfo.version"

// Target is one platform of the release.
type Target struct {
	GOOS, GOARCH string
	GOARM        string // for GOARCH=arm only: the ARM version
}

// Targets are the release platforms: x86-64 ground stations and servers, 64-bit ARM
// companion computers (Raspberry Pi 3/4/5 and Zero 2 with a 64-bit OS, Jetson), and 32-bit
// ARMv7 ones (Raspberry Pi OS 32-bit, older boards).
var Targets = []Target{
	{GOOS: "linux", GOARCH: "amd64"},
	{GOOS: "linux", GOARCH: "arm64"},
	{GOOS: "linux", GOARCH: "arm", GOARM: "7"},
}

// Name is the target's suffix in file names: linux-amd64, linux-arm64, linux-armv7.
func (t Target) Name() string {
	if t.GOARCH == "arm" {
		return t.GOOS + "-armv" + t.GOARM
	}
	return t.GOOS + "-" + t.GOARCH
}

// Env is the target's build environment (to append to os.Environ()).
func (t Target) Env() []string {
	env := []string{"CGO_ENABLED=0", "GOOS=" + t.GOOS, "GOARCH=" + t.GOARCH}
	if t.GOARM != "" {
		env = append(env, "GOARM="+t.GOARM)
	}
	return env
}

// BuildFlags are the go build flags of a release binary stamped with version.
func BuildFlags(version string) []string {
	return []string{"-trimpath", "-ldflags", LDFlags(version)}
}

// LDFlags are the linker flags of a release binary: no symbol table and no DWARF (-s -w),
// and the version stamp.
func LDFlags(version string) string {
	return "-s -w -X " + StampVariable + "=" + version
}

// FileName is a binary's name in dist/: PROGRAM-linux-ARCH, e.g. dronelinkd-linux-arm64.
func FileName(program string, t Target) string { return program + "-" + t.Name() }

// TargetOf finds the target of a dist/ file name (PROGRAM-linux-ARCH).
func TargetOf(path string) (Target, bool) {
	base := filepath.Base(path)
	for _, t := range Targets {
		if strings.HasSuffix(base, "-"+t.Name()) && len(base) > len(t.Name())+1 {
			return t, true
		}
	}
	return Target{}, false
}

// elfMachine is the ELF machine of each GOARCH of the release.
var elfMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "arm": elf.EM_ARM}

// Verify checks that the file at path is a release binary for t stamped with version
// (not checked if empty) and at most maxSize bytes. It returns every problem found, nil if
// none.
func Verify(path string, t Target, version string, maxSize int64) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{path}, args...)...))
	}
	fi, err := os.Stat(path)
	if err != nil {
		return []error{err}
	}
	if fi.Size() > maxSize {
		bad("%d bytes, more than the limit of %d", fi.Size(), maxSize)
	}
	f, err := elf.Open(path)
	if err != nil {
		return append(errs, fmt.Errorf("%s: not an ELF file: %w", path, err))
	}
	defer f.Close()
	if want, ok := elfMachine[t.GOARCH]; !ok || f.Machine != want {
		bad("ELF machine %v, want %v for %s", f.Machine, want, t.Name())
	}
	if f.Type != elf.ET_EXEC {
		bad("ELF type %v, want a static executable (ET_EXEC)", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			bad("has a program interpreter (dynamically linked)")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		bad("needs shared libraries %v (%v)", libs, err)
	}
	if f.Section(".symtab") != nil {
		bad("has a symbol table (not stripped: want -ldflags -s)")
	}
	if f.Section(".debug_info") != nil || f.Section(".zdebug_info") != nil {
		bad("has DWARF debug information (want -ldflags -w)")
	}

	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return append(errs, fmt.Errorf("%s: no Go build information: %w", path, err))
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	want := [][2]string{{"CGO_ENABLED", "0"}, {"GOOS", t.GOOS}, {"GOARCH", t.GOARCH}, {"-trimpath", "true"}}
	if t.GOARM != "" {
		want = append(want, [2]string{"GOARM", t.GOARM})
	}
	for _, kv := range want {
		if settings[kv[0]] != kv[1] {
			bad("built with %s=%q, want %q", kv[0], settings[kv[0]], kv[1])
		}
	}
	// -trimpath leaves -ldflags out of the build information: -s and -w show as the
	// missing symbol table and DWARF above, and the stamp is looked for in the binary.
	if version != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return append(errs, err)
		}
		if !bytes.Contains(data, []byte(version)) {
			bad("not stamped with version %q (-ldflags -X %s=VERSION)", version, StampVariable)
		}
	}
	return errs
}

// ErrUnknownTarget is returned by VerifyFile for a file name that names no release target.
var ErrUnknownTarget = errors.New("file name does not end in a release target (-linux-amd64, -linux-arm64, -linux-armv7)")

// VerifyFile is Verify with the target taken from the file name (see FileName).
func VerifyFile(path, version string, maxSize int64) []error {
	t, ok := TargetOf(path)
	if !ok {
		return []error{fmt.Errorf("%s: %w", path, ErrUnknownTarget)}
	}
	return Verify(path, t, version, maxSize)
}
