package activities

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/checks"
	"github.com/taskworker/taskworker/internal/github"
	"github.com/taskworker/taskworker/internal/tasksapi"
)

// CIInput is one poll of the checks of the commit a run pushed.
type CIInput struct {
	Run       RunContext `json:"run"`
	CommitSHA string     `json:"commit_sha"`
	// Round counts the run's waits for checks, from 1; Poll the polls of this one.
	Round int `json:"round"`
	Poll  int `json:"poll"`
	// Waited is how long this wait has lasted; GiveUpOnNone ends it when no
	// check at all has reported by now.
	Waited       time.Duration `json:"waited"`
	GiveUpOnNone bool          `json:"give_up_on_none,omitempty"`
}

// CIStatus is what a poll found.
type CIStatus struct {
	State string `json:"state"`
	// Done ends the wait: the checks passed or failed, or none came.
	Done    bool           `json:"done,omitempty"`
	Checks  []checks.Check `json:"checks,omitempty"`
	Failing []checks.Check `json:"failing,omitempty"`
	Pending []checks.Check `json:"pending,omitempty"`
	// WaitUntil is GitHub's rate limit reset when the next poll must wait for it.
	WaitUntil time.Time `json:"wait_until,omitempty"`
}

// minRemaining is the rate limit left below which polls wait for its reset.
const minRemaining = 20

// CheckCI reads the checks and commit statuses of the commit the run
// pushed, once: the waiting between polls is the workflow's timer. The
// first poll of a round and its last say so in the run's log and record
// output.ci; a failing check's log is read for the round that fixes it.
func (a *Activities) CheckCI(ctx context.Context, in CIInput) (CIStatus, error) {
	st, err := a.checkCI(ctx, in)
	return st, a.temporalError(err)
}

func (a *Activities) checkCI(ctx context.Context, in CIInput) (CIStatus, error) {
	if a.GitHub == nil {
		return CIStatus{State: checks.None, Done: true}, nil
	}
	owner, repo, _ := strings.Cut(in.Run.Repository, "/")
	ci, err := a.GitHub.CI(ctx, owner, repo, in.CommitSHA)
	var limited *github.RateLimited
	if errors.As(err, &limited) {
		a.logger(in.Run.RunRef).Info("GitHub's rate limit: the next poll of the checks waits for its reset")
		return CIStatus{State: checks.Pending, WaitUntil: limited.Until}, nil
	}
	if err != nil {
		return CIStatus{}, fmt.Errorf("read the checks of %s on %s: %w", short(in.CommitSHA), in.Run.Repository, err)
	}
	st := CIStatus{State: ci.State()}
	if ci.RateLimit.Known && ci.RateLimit.Remaining < minRemaining {
		st.WaitUntil = ci.RateLimit.Reset
	}
	for _, c := range ci.Checks {
		check := checks.Check{Name: c.Name, Status: c.Status, Conclusion: c.Conclusion, URL: c.DetailsURL}
		st.Checks = append(st.Checks, check)
		if c.Status != "completed" {
			st.Pending = append(st.Pending, check)
		}
	}
	switch st.State {
	case checks.Success:
		st.Done = true
	case checks.None:
		st.Done = in.GiveUpOnNone
	case checks.Failure:
		st.Done = true
		for i, c := range ci.Failing() {
			check := checks.Check{Name: c.Name, Status: c.Status, Conclusion: c.Conclusion, URL: c.DetailsURL}
			if i < checks.MaxChecks {
				// Twice what the follow-up keeps: redacted whole, then cut
				// (and marked cut) by checks.FollowUp.
				text, err := a.GitHub.CheckLog(ctx, owner, repo, c, 2*checks.MaxLogBytes)
				if errors.As(err, &limited) {
					return CIStatus{State: checks.Pending, WaitUntil: limited.Until}, nil
				}
				if err != nil {
					text = "(its log could not be read: " + a.redactError(err) + ")"
				}
				check.Log = a.Redactor.String(text)
			}
			st.Failing = append(st.Failing, check)
		}
	}
	if in.Poll == 1 || st.Done {
		a.reportChecks(ctx, in, st)
	}
	return st, nil
}

// reportChecks writes a round's start and end in the run's log, as its own
// group, and the checks in output.ci for the UI.
func (a *Activities) reportChecks(ctx context.Context, in CIInput, st CIStatus) {
	ref := in.Run.RunRef
	log := a.stream(ctx, ref, StepChecks, false)
	group := roundGroup(in.Round)
	emit := func(status, detail string) { progress(log, group, StepChecks, status, detail) }
	if in.Poll == 1 {
		if err := a.setStage(ctx, ref, StepChecks); err != nil {
			a.logger(ref).Warn("stage not recorded: " + a.redactError(err))
		}
		emit(acp.StepStarted, short(in.CommitSHA))
	}
	switch {
	case !st.Done:
	case st.State == checks.Failure:
		emit(acp.StepFailed, "failing: "+checks.Names(st.Failing))
	case st.State == checks.None:
		emit(acp.StepCompleted, fmt.Sprintf("no check reported on %s within %s; not watching CI", short(in.CommitSHA), in.Waited.Round(time.Second)))
	default:
		emit(acp.StepCompleted, fmt.Sprintf("%d checks passed", len(st.Checks)))
	}
	ci := map[string]any{"state": st.State, "round": in.Round, "commit_sha": in.CommitSHA, "checks": st.Checks}
	output := map[string]any{"ci": ci}
	if st.Done {
		output["ci_rounds"] = in.Round
	}
	if _, err := a.API.UpdateRun(ctx, ref.TaskID, ref.RunID, tasksapi.RunUpdate{Output: output}); err != nil {
		log.Console(acp.LevelWarn, "could not record the checks on the run: "+a.redactError(err))
	}
	if _, err := a.closeStream(ctx, ref, log, 0); err != nil {
		a.logger(ref).Warn("checks log not written: " + a.redactError(err))
	}
}
