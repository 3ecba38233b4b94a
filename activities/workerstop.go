package activities

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/taskworker/taskworker/internal/drain"
	"github.com/taskworker/taskworker/internal/process"
)

// workerStop is a host step's watch on its worker: once the worker begins to
// stop (its drain ran out), the step has Config.StopWindow before the process
// exits, and uses it to stop its agent with grace, flush its log and report.
type workerStop struct {
	// done is closed once the worker began to stop.
	done    chan struct{}
	at      atomic.Pointer[time.Time]
	window  time.Duration
	queue   string
	release context.CancelFunc
}

type workerStopKey struct{}

// ErrWorkerStopped is the error type of a host step its worker stopped on its
// way out: the workflow treats it as a lost host.
const ErrWorkerStopped = "WorkerStopped"

// watchWorkerStop watches the stop channel of the worker running the step.
// The context it returns carries the watch, so the step's final flushes end
// in time to report (closeStream); release ends the watch.
func (a *Activities) watchWorkerStop(ctx context.Context) (context.Context, *workerStop) {
	window := a.Config.StopWindow
	if window <= 0 {
		window = drain.Budget{AgentGrace: process.DefaultStopGrace}.StopWindow()
	}
	watch, release := context.WithCancel(ctx)
	w := &workerStop{done: make(chan struct{}), window: window, queue: a.Config.HostQueue, release: release}
	if !activity.IsActivity(ctx) {
		return ctx, w
	}
	workerStopping := activity.GetWorkerStopChannel(ctx)
	go func() {
		select {
		case <-watch.Done():
		case <-workerStopping:
			now := time.Now()
			w.at.Store(&now)
			close(w.done)
		}
	}()
	return context.WithValue(ctx, workerStopKey{}, w), w
}

// onStop calls stop if the worker begins to stop before the returned
// function is called.
func (w *workerStop) onStop(stop func()) (unwatch func()) {
	unwatched := make(chan struct{})
	go func() {
		select {
		case <-w.done:
			stop()
		case <-unwatched:
		}
	}()
	return func() { close(unwatched) }
}

// stopped reports whether the worker began to stop.
func (w *workerStop) stopped() bool { return w.at.Load() != nil }

// flushDeadline is when a final flush must end for the step to report
// before the process exits; ok is false while the worker runs on.
func (w *workerStop) flushDeadline() (deadline time.Time, ok bool) {
	at := w.at.Load()
	if at == nil {
		return time.Time{}, false
	}
	return drain.FlushDeadline(*at, w.window), true
}

// flushDeadlineOf is the flush deadline of the step ctx belongs to, if its
// worker is stopping.
func flushDeadlineOf(ctx context.Context) (time.Time, bool) {
	if w, ok := ctx.Value(workerStopKey{}).(*workerStop); ok {
		return w.flushDeadline()
	}
	return time.Time{}, false
}

// err is the step's failure once its worker stopped it: the workflow takes
// it for a lost host and goes on on another worker.
func (w *workerStop) err() error { return &workerStoppedError{queue: w.queue} }

// workerStoppedError is a host step a worker stopped on its way out.
type workerStoppedError struct{ queue string }

func (e *workerStoppedError) Error() string {
	return fmt.Sprintf("worker %s shut down before the agent finished (its TASKWORKER_DRAIN_TIMEOUT ran out); the agent was stopped and its log saved", e.queue)
}
