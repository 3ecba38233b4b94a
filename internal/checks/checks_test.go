package checks

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFollowUpNamesTheFailingChecksAndEndsOfTheirLogs(t *testing.T) {
	long := strings.Repeat("noise line\n", 5000) + "FAIL: TestGreeting: want hello, got bye\n"
	msg := FollowUp(1, 3, []Check{
		{Name: "test", Conclusion: "failure", URL: "https://ci/1", Log: long},
		{Name: "lint", Conclusion: "timed_out"},
	})
	require.Contains(t, msg, "round 1 of 3). Failing checks: test, lint.")
	require.Contains(t, msg, "## test (failure)\nhttps://ci/1\n```\n[…]\n")
	require.Contains(t, msg, "FAIL: TestGreeting: want hello, got bye\n```", "the end of the log, where the error is")
	require.Contains(t, msg, "## lint (timed_out)\n(no log)")
	require.Less(t, len(msg), MaxLogBytes+1000, "the log is cut to its end")
}

func TestFollowUpStaysWithinItsTotalBudget(t *testing.T) {
	var failing []Check
	for i := 0; i < 20; i++ {
		failing = append(failing, Check{Name: "c", Conclusion: "failure", Log: strings.Repeat("x\n", MaxLogBytes)})
	}
	msg := FollowUp(2, 3, failing)
	require.Less(t, len(msg), MaxTotalBytes+4000)
	require.Contains(t, msg, "(12 more failing checks not shown)")
}

func TestTailCutsAtARuneAndALine(t *testing.T) {
	require.Equal(t, "short", Tail("short", 10))
	got := Tail("aaaa\nbbbé\ncccc", 7)
	require.Equal(t, "[…]\ncccc", got)
	require.True(t, strings.HasPrefix(Tail(strings.Repeat("é", 100), 11), "[…]\n"))
	require.Equal(t, "", Tail("abc", 0))
}

func TestStillFailingNamesTheChecks(t *testing.T) {
	require.Equal(t, "the pull request's checks still fail after 3 rounds of fixes (TASKWORKER_CI_MAX_ROUNDS): test, lint",
		StillFailing(3, []Check{{Name: "test"}, {Name: "lint"}}))
}
