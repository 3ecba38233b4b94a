package drain

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The steps are told to stop when what's left of the drain is just their
// agents' grace, their flush and their report, so the process exits when the
// drain timeout says.
func TestTheStepsAreStoppedWhenWhatIsLeftIsWhatTheyNeed(t *testing.T) {
	b := Budget{Timeout: 10 * time.Minute, AgentGrace: 10 * time.Second, FlushTimeout: 5 * time.Minute}
	require.Equal(t, 30*time.Second, b.Flush(), "a stopped step's flush waits at most MaxFlush")
	require.Equal(t, 45*time.Second, b.StopWindow())
	require.Equal(t, 10*time.Minute-45*time.Second, b.StopAfter())
	require.Equal(t, b.Timeout, b.StopAfter()+b.StopWindow())
}

func TestAShorterFlushTimeoutShortensTheStopWindow(t *testing.T) {
	b := Budget{Timeout: 8 * time.Second, AgentGrace: time.Second, FlushTimeout: time.Second}
	require.Equal(t, time.Second, b.Flush())
	require.Equal(t, 7*time.Second, b.StopWindow())
	require.Equal(t, time.Second, b.StopAfter())
}

// A drain timeout shorter than the stop window stops the steps at once; the
// window is never cut, so their agents still get their grace and their logs
// their flush.
func TestADrainShorterThanTheStopWindowStopsAtOnce(t *testing.T) {
	b := Budget{Timeout: 5 * time.Second, AgentGrace: 10 * time.Second}
	require.Zero(t, b.StopAfter())
	require.Equal(t, 10*time.Second+MaxFlush+ReportTime, b.StopWindow())
}

func TestAFlushEndsInTimeForTheStepToReport(t *testing.T) {
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	require.Equal(t, at.Add(40*time.Second), FlushDeadline(at, 45*time.Second))
}
