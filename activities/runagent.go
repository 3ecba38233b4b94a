package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/agent"
	"github.com/taskworker/taskworker/internal/artifacts"
	"github.com/taskworker/taskworker/internal/fence"
	"github.com/taskworker/taskworker/internal/logstream"
	"github.com/taskworker/taskworker/internal/structured"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// AgentInput is what RunAgent works on.
type AgentInput struct {
	Run RunContext `json:"run"`
	// Message is the user's message that came with the run (its workflow
	// input's initial_message), told the agent after the task.
	Message string `json:"message,omitempty"`
}

// AgentOutput is the workspace the agent worked in and what it said.
type AgentOutput struct {
	Workspace Workspace `json:"workspace"`
	Summary   string    `json:"summary,omitempty"`
	LogLoss
	// Result is the agent's JSON result, valid against the task's json_schema.
	Result json.RawMessage `json:"result,omitempty"`
	// Session is the agent's conversation, which a follow-up turn resumes.
	Session string `json:"session,omitempty"`
}

// cloneAttempts bounds the retries of a clone that could not reach the
// remote: RunAgent as a whole is never retried, as its agent must not run twice.
// This is the one level of retries of git's network in RunAgent. Worst case:
// 3 clones, 2 s and 4 s apart, within the step's own deadline.
const cloneAttempts = 3

// RunAgent clones the repository into a fresh workspace and runs the coding
// agent in it, streaming what it says to the run's log. One step, not two:
// each step costs a trip through the server, and this one is on the path
// from kick-off to agent. Cancelling it stops the agent's process group, and
// so does its attempt being fenced (holdAttempt, watchRun).
func (a *Activities) RunAgent(ctx context.Context, in AgentInput) (AgentOutput, error) {
	ctx, release := a.holdAttempt(inRound(ctx, in.Run.CIRound), in.Run.RunRef)
	defer release()
	ctx, worker := a.watchWorkerStop(ctx)
	defer worker.release()
	ref := in.Run.RunRef
	var out AgentOutput
	dropped, err := a.runStep(ctx, ref, StepClone, in.Run.Repository, 0, func(log *logstream.Stream) (string, error) {
		if err := a.recordAttempt(ctx, in.Run, log); err != nil {
			return "", err
		}
		ws, err := a.prepareWorkspace(ctx, in.Run, log)
		for attempt := 1; attempt < cloneAttempts && retryableClone(err) && ctx.Err() == nil; attempt++ {
			log.Console(acp.LevelWarn, fmt.Sprintf("clone failed, trying again: %s", a.redactError(err)))
			select {
			case <-time.After(time.Duration(attempt) * 2 * time.Second):
			case <-ctx.Done():
			}
			ws, err = a.prepareWorkspace(ctx, in.Run, log)
		}
		out.Workspace = ws
		source := "cloned"
		if ws.CacheHit {
			source = "from cache"
		}
		return fmt.Sprintf("%s@%s (%s), %s", in.Run.Repository, ws.BaseBranch, short(ws.BaseSHA), source), err
	})
	out.LogDropped = dropped
	if err != nil {
		return out, err
	}
	var turn AgentOutput
	turn, err = a.agentTurn(ctx, in.Run, out.Workspace, agent.Turn{Number: 1, Keep: in.Run.Interactive(), Message: in.Message}, worker, dropped)
	out.Summary, out.Result, out.Session, out.LogDropped = turn.Summary, turn.Result, turn.Session, turn.LogDropped
	if err != nil && worker.stopped() {
		// The workflow sends no cleanup to a worker on its way out.
		_ = a.CleanupWorkspace(context.WithoutCancel(ctx), in.Run.RunRef)
	}
	return out, err
}

// agentTurn runs the agent for one turn of the run in its workspace, as the
// run's agent step: the task's own turn, or a follow-up's.
func (a *Activities) agentTurn(ctx context.Context, run RunContext, ws Workspace, turn agent.Turn, worker *workerStop, prior int) (AgentOutput, error) {
	var out AgentOutput
	detail := a.Agent.Name()
	if turn.FollowUp() {
		detail = fmt.Sprintf("%s, turn %d", detail, turn.Number)
	}
	dropped, err := a.runStep(ctx, run.RunRef, StepAgent, detail, prior, func(log *logstream.Stream) (string, error) {
		if turn.Message != "" {
			// The turn's message (the user's, or a CI round's), where
			// PostHog's UI shows a user's.
			log.Emit(acp.UserMessage(a.Redactor.String(turn.Message)))
		}
		if worker.stopped() {
			return "", worker.err()
		}
		agentCtx, cancel := context.WithTimeout(ctx, run.AgentTimeout)
		defer cancel()
		defer worker.onStop(cancel)()
		watch := a.watchRun(agentCtx, run.RunRef, run.HostAttempt, cancel)
		box, err := a.startSandbox(ws, log)
		if err != nil {
			return "", err
		}
		defer box.close()
		model := a.modelAccess(run.RunRef, run.Budget(a.Config), box)
		defer model.revoke()
		stopAtBudget := model.stopAtBudget(agentCtx, cancel)
		outputFile := filepath.Join(ws.OutDir, "output.json")
		res, err := a.Agent.Run(agentCtx, agent.Request{
			Task: agent.Task{
				ID: run.TaskID, RunID: run.RunID, Title: run.Title,
				Description: run.Description, Repository: run.Repository,
				JSONSchema: run.JSONSchema,
			},
			Dir:          ws.RepoDir,
			ArtifactsDir: ws.ArtifactsDir,
			HomeDir:      ws.HomeDir,
			WorkerDir:    ws.WorkerDir,
			OutputFile:   outputFile,
			Isolation:    box.isolation(),
			Model:        model.access,
			Proxy:        box.proxyURL(),
			Turn:         turn,
			ModelName:    run.Settings.Model,
			Effort:       run.Settings.Effort,
		}, log)
		switch {
		case agent.ValidSession(res.Session):
			out.Session = res.Session
		case res.Session != "":
			log.Console(acp.LevelWarn, fmt.Sprintf("the agent reported session %q, which is not a session ID: a next turn starts a new conversation", a.Redactor.String(res.Session)))
		}
		res.Usage = model.counted(res.Usage)
		if fence.Cause(ctx) == nil && watch.superseded() == nil {
			a.recordUsage(ctx, run.RunRef, res, log)
		}
		var exitErr *agent.ExitError
		switch {
		case err == nil:
			a.Metrics.AgentExit(0, false)
		case errors.As(err, &exitErr):
			a.Metrics.AgentExit(exitErr.Result.ExitCode, exitErr.Result.Signal != "")
		}
		switch {
		case err == nil:
			out.Summary = a.Redactor.String(res.Summary)
			if len(run.JSONSchema) > 0 {
				var output artifacts.Path
				if output, err = a.agentWrote(outputFile); err == nil {
					out.Result, err = a.agentResult(run.JSONSchema, res, output, log)
				}
			}
		case fence.Cause(ctx) != nil:
			err = fence.Cause(ctx)
			log.Console(acp.LevelWarn, "agent stopped: "+err.Error())
		case ctx.Err() != nil:
			// A run ended from outside (complete_task) is stopped by a
			// cancel too: say which it was.
			if status := a.endedStatus(ctx, run.RunRef); status != "" {
				log.Console(acp.LevelWarn, fmt.Sprintf("agent stopped: the run was ended elsewhere (%s)", status))
			} else {
				log.Console(acp.LevelWarn, "agent stopped: the run was cancelled")
			}
			err = ctx.Err()
		case worker.stopped():
			log.Console(acp.LevelWarn, "agent stopped: this worker is shutting down and its drain timeout ran out")
			err = worker.err()
		case stopAtBudget() != "":
			log.Console(acp.LevelWarn, "agent stopped: the run's "+stopAtBudget())
			err = permanent("%s", stopAtBudget())
		case watch.ended() != "":
			log.Console(acp.LevelWarn, fmt.Sprintf("agent stopped: the run was ended elsewhere (%s)", watch.ended()))
			err = alreadyEnded(tasksapi.Status(watch.ended()))
		case watch.superseded() != nil:
			err = watch.superseded()
			log.Console(acp.LevelWarn, "agent stopped: "+err.Error())
		case watch.refused() != nil:
			log.Console(acp.LevelError, "agent stopped: the Tasks API refused to show the run: "+a.redactError(watch.refused()))
			err = fmt.Errorf("the agent was stopped: the Tasks API refused to show the run while it worked: %w", watch.refused())
		case agentCtx.Err() != nil:
			err = &agentTimeoutError{after: run.AgentTimeout.String()}
		}
		return "", err
	})
	out.Workspace, out.LogDropped = ws, dropped
	return out, err
}

// recordUsage writes what the agent reported it cost into the run's output
// (usage) and state (agent_session), failed runs included.
func (a *Activities) recordUsage(ctx context.Context, ref RunRef, res agent.Result, log *logstream.Stream) {
	if len(res.Usage) == 0 && res.Session == "" {
		return
	}
	a.Metrics.AgentUsage(res.Usage)
	update := tasksapi.RunUpdate{}
	if len(res.Usage) > 0 {
		update.Output = map[string]any{"usage": res.Usage}
	}
	if res.Session != "" {
		update.State = map[string]any{"agent_session": res.Session}
	}
	if _, err := a.API.UpdateRun(context.WithoutCancel(ctx), ref.TaskID, ref.RunID, update); err != nil {
		log.Console(acp.LevelWarn, "could not record the agent's usage on the run: "+a.redactError(err))
	}
}

// agentResult finds the agent's JSON result and checks it against the
// task's schema; a missing or invalid one fails the run, naming why.
func (a *Activities) agentResult(schema json.RawMessage, res agent.Result, outputFile artifacts.Path, log *logstream.Stream) (json.RawMessage, error) {
	compiled, err := structured.Compile(schema)
	if err != nil {
		return nil, permanent("%v", err)
	}
	result, source, err := structured.Find(res.Structured, outputFile, res.Summary)
	if err != nil {
		return nil, permanent("%s", a.Redactor.String(err.Error()))
	}
	if err := compiled.Validate(result); err != nil {
		return nil, permanent("%s (from %s)", a.Redactor.String(err.Error()), source)
	}
	log.Console(acp.LevelInfo, fmt.Sprintf("the agent's result (from %s) matches the task's json_schema", source))
	return json.RawMessage(a.Redactor.String(string(result))), nil
}

// withResult puts a schema-checked result into the run's output (see
// structured.Merge: the worker's own keys always win) and says in the log
// which of the result's keys are kept under output.result for that.
func withResult(output map[string]any, result json.RawMessage, log *logstream.Stream) map[string]any {
	output, moved := structured.Merge(output, result)
	if len(moved) > 0 {
		log.Console(acp.LevelWarn, fmt.Sprintf("the agent's result has keys the worker writes itself (%s); they are kept under output.%s",
			strings.Join(moved, ", "), structured.ResultKey))
	}
	return output
}

// agentWrote is path, a file or folder of a run's workspace, as one read
// back safely: the workspace dir is the worker's, all below it the agent's.
func (a *Activities) agentWrote(path string) (artifacts.Path, error) {
	return artifacts.Beneath(a.Config.WorkspaceDir, path)
}

// endedStatus is the run's status when the API holds it terminal, "" when it
// does not or cannot be read within a moment.
func (a *Activities) endedStatus(ctx context.Context, ref RunRef) tasksapi.Status {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if run, err := a.API.GetRun(ctx, ref.TaskID, ref.RunID); err == nil && run.Status.Terminal() {
		return run.Status
	}
	return ""
}
