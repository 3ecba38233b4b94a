package testtool

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// recorder is a TB that keeps what a test was told.
type recorder struct{ skipped, failed string }

func (*recorder) Helper()                        {}
func (r *recorder) Skipf(f string, args ...any)  { r.skipped = fmt.Sprintf(f, args...) }
func (r *recorder) Fatalf(f string, args ...any) { r.failed = fmt.Sprintf(f, args...) }

func TestAMissingToolSkipsSayingHowToInstallItUnlessRequired(t *testing.T) {
	missing := Tool{Names: []string{"taskworker-no-such-tool"}, Require: "TASKWORKER_REQUIRE_NO_SUCH_TOOL", Install: "apt-get install it"}
	t.Setenv(missing.Require, "")
	var r recorder
	require.Empty(t, missing.Path(&r))
	require.Empty(t, r.failed)
	require.Equal(t, "this test needs taskworker-no-such-tool, which is not on PATH: install it (apt-get install it; .ci/run does); TASKWORKER_REQUIRE_NO_SUCH_TOOL=1 makes its absence a failure", r.skipped)

	t.Setenv(missing.Require, "1")
	r = recorder{}
	missing.Path(&r)
	require.Empty(t, r.skipped)
	require.Contains(t, r.failed, "TASKWORKER_REQUIRE_NO_SUCH_TOOL is set, so it is required")

	git := Tool{Names: []string{"taskworker-no-such-tool", "git"}}
	r = recorder{}
	require.NotEmpty(t, git.Path(&r), "the first of its names on PATH")
	require.Empty(t, r.skipped+r.failed)
}
