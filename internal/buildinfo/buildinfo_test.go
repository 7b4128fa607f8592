package buildinfo

import (
	"runtime"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	cases := []struct {
		stamped string
		want    func(string) bool
	}{
		{"v1.2.0-3-gabc1234-dirty", func(v string) bool { return v == "v1.2.0-3-gabc1234-dirty ("+runtime.Version()+")" }},
		// Unstamped: what the toolchain recorded ("(devel)" without VCS stamping).
		{"", func(v string) bool {
			return !strings.HasPrefix(v, "v1.2.0") && strings.HasSuffix(v, runtime.Version()+")")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.stamped, func(t *testing.T) {
			defer func(saved string) { version = saved }(version)
			version = tc.stamped
			if got := Version(); !tc.want(got) {
				t.Errorf("stamped %q: Version() = %q", tc.stamped, got)
			}
		})
	}
}
