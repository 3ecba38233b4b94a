package activities

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/taskworker/taskworker/internal/fence"
)

// runWatch is what watchRun learned about the run while its agent worked;
// each is empty while it learned nothing of the kind.
type runWatch struct {
	endedAs    atomic.Value // the status someone else set
	refusal    atomic.Pointer[error]
	supersedes atomic.Pointer[error]
}

// ended is the status someone else ended the run with, "" while nobody did.
func (w *runWatch) ended() string {
	s, _ := w.endedAs.Load().(string)
	return s
}

// refused is the API's answer when it refused to show the run.
func (w *runWatch) refused() error { return loadErr(&w.refusal) }

// superseded is a *fence.SupersededError once the run records a later host
// attempt than the agent's.
func (w *runWatch) superseded() error { return loadErr(&w.supersedes) }

func loadErr(p *atomic.Pointer[error]) error {
	if err := p.Load(); err != nil {
		return *err
	}
	return nil
}

// watchRun reads the run about every StatusCheckEvery (a fifth more or less
// at random, so the runs of a fleet don't poll in step) while its agent
// works, and stops the agent if someone else ended the run (cancelled from
// the UI), if the API refuses to show it (401, 403, 404: a revoked key, a
// deleted task), since nothing the agent does could reach the run then, or
// if the run records a later host attempt than attempt: a worker holds it
// that the workflow started after giving this one up.
func (a *Activities) watchRun(ctx context.Context, ref RunRef, attempt int, stop context.CancelFunc) *runWatch {
	w := &runWatch{}
	if a.Config.StatusCheckEvery <= 0 {
		return w
	}
	go func() {
		t := time.NewTimer(jittered(a.Config.StatusCheckEvery))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			run, err := a.API.GetRun(ctx, ref.TaskID, ref.RunID)
			switch {
			case err == nil && run.Status.Terminal():
				w.endedAs.Store(string(run.Status))
				stop()
				return
			case err == nil && fence.Check(run.State, attempt) != nil:
				superseded := fence.Check(run.State, attempt)
				w.supersedes.Store(&superseded)
				stop()
				return
			case refusedForGood(err):
				w.refusal.Store(&err)
				stop()
				return
			}
			t.Reset(jittered(a.Config.StatusCheckEvery))
		}
	}()
	return w
}
