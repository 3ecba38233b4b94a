package activities

import (
	"context"
	"os"

	"github.com/taskworker/taskworker/internal/agent"
)

// TurnInput is a follow-up turn of an interactive run.
type TurnInput struct {
	Run       RunContext `json:"run"`
	Workspace Workspace  `json:"workspace"`
	Turn      agent.Turn `json:"turn"`
}

// RunTurn answers a follow-up: the agent runs again in the workspace RunAgent
// prepared, on the worker that holds it, and resumes the conversation of the
// turn before. Like RunAgent it is never retried, and cancelling it stops
// the agent.
func (a *Activities) RunTurn(ctx context.Context, in TurnInput) (AgentOutput, error) {
	ctx, release := a.holdAttempt(ctx, in.Run.RunRef)
	defer release()
	ctx, worker := a.watchWorkerStop(ctx)
	defer worker.release()
	if info, err := os.Stat(in.Workspace.RepoDir); err != nil || !info.IsDir() {
		// A worker started again on the same queue sweeps what it doesn't
		// hold; the conversation lived in that workspace.
		return AgentOutput{Workspace: in.Workspace}, a.temporalError(permanent(
			"turn %d: the run's workspace is gone from worker %s (was it restarted?); the agent's conversation was in it: start a new run to go on",
			in.Turn.Number, a.Config.HostQueue))
	}
	out, err := a.agentTurn(ctx, in.Run, in.Workspace, in.Turn, worker, 0)
	if err != nil && worker.stopped() {
		// The workflow sends no cleanup to a worker on its way out.
		_ = a.CleanupWorkspace(context.WithoutCancel(ctx), in.Run.RunRef)
	}
	return out, err
}
