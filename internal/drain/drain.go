// Package drain times a worker's graceful shutdown, so that the runs it still
// holds when its drain timeout runs out lose nothing: their agents are stopped
// early enough that each gets its grace and its step's final log flush, and
// the step reports in, before the process exits.
package drain

import "time"

// MaxFlush bounds the final log flush of a step a drain stopped, however long
// TASKWORKER_LOG_FLUSH_TIMEOUT lets other flushes wait for the API.
const MaxFlush = 30 * time.Second

// ReportTime is what a stopped step keeps after its flush: it removes its
// workspace and reports its failure to Temporal.
const ReportTime = 5 * time.Second

// Budget is how a drain spends its time.
type Budget struct {
	// Timeout is the whole drain, from SIGTERM to the process's exit
	// (TASKWORKER_DRAIN_TIMEOUT).
	Timeout time.Duration
	// AgentGrace is an agent's time between SIGTERM and SIGKILL
	// (TASKWORKER_AGENT_STOP_GRACE).
	AgentGrace time.Duration
	// FlushTimeout is the longest a step's final flush may wait otherwise
	// (TASKWORKER_LOG_FLUSH_TIMEOUT); a stopped step's waits no longer.
	FlushTimeout time.Duration
}

// Flush is the final flush of a step the drain stopped.
func (b Budget) Flush() time.Duration {
	if b.FlushTimeout > 0 {
		return min(b.FlushTimeout, MaxFlush)
	}
	return MaxFlush
}

// StopWindow is the time from telling the steps still running to stop to the
// process's exit: the agents' grace, the final flush and the report.
func (b Budget) StopWindow() time.Duration {
	return max(b.AgentGrace, 0) + b.Flush() + ReportTime
}

// StopAfter is how long after the drain begins the steps still running are
// told to stop: at once when the timeout is shorter than the stop window, in
// which case the process exits after the window instead.
func (b Budget) StopAfter() time.Duration {
	return max(b.Timeout-b.StopWindow(), 0)
}

// FlushDeadline is when the final flush of a step told to stop at stoppedAt
// must end, given the stop window it has: early enough to report in.
func FlushDeadline(stoppedAt time.Time, window time.Duration) time.Time {
	return stoppedAt.Add(window - ReportTime)
}
