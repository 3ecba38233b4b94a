package activities

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/taskworker/taskworker/internal/tasksapi"
)

// claimRecord is a run's claim of this worker, kept on disk beside the
// workspaces. A worker started again on the same folder (a container that
// restarted in its pod, with its name and so its queue) learns from it which
// workspaces a run may still come back to: a step retried on its queue, such
// as Publish, needs the workspace the agent left.
type claimRecord struct {
	TaskID  string    `json:"task_id"`
	RunID   string    `json:"run_id"`
	Project string    `json:"project"`
	Expires time.Time `json:"expires"`
}

// claimsDir holds the claim records, one file per run.
func (a *Activities) claimsDir() string { return filepath.Join(a.Config.WorkspaceDir, ".claims") }

func (a *Activities) claimFile(runID string) string {
	return filepath.Join(a.claimsDir(), runID+".json")
}

// recordClaim writes run's claim record, replacing one it had.
func (a *Activities) recordClaim(run RunContext, ttl time.Duration) error {
	data, err := json.Marshal(claimRecord{TaskID: run.TaskID, RunID: run.RunID, Project: a.Config.Project, Expires: time.Now().Add(ttl)})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(a.claimsDir(), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(a.claimsDir(), ".claim-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), a.claimFile(run.RunID))
}

// forgetClaim removes run's claim record.
func (a *Activities) forgetClaim(runID string) {
	if err := os.Remove(a.claimFile(runID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		a.Logger.Warn("claim record not removed", zap.String("run_id", runID), zap.Error(err))
	}
}

func (a *Activities) readClaim(runID string) (claimRecord, bool) {
	data, err := os.ReadFile(a.claimFile(runID))
	if err != nil {
		return claimRecord{}, false
	}
	var rec claimRecord
	if json.Unmarshal(data, &rec) != nil || rec.RunID != runID {
		return claimRecord{}, false
	}
	return rec, true
}

// runFolder is the name of a folder the worker makes for a run: its run ID,
// a lower-case UUID (the workflow checks and lower-cases it).
var runFolder = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// sweepCheckTimeout bounds the API reads of one sweep, so start-up never
// waits long on a Tasks API that is down (the workspaces are kept then).
const sweepCheckTimeout = 30 * time.Second

// SweepWorkspaces removes the run folders under the workspace dir that no
// claim holds: left by a worker that crashed, or by a run whose workflow
// vanished. The worker runs it as it starts, before it takes any run. Only
// folders the worker made are touched — real directories (never a symlink)
// named by a run ID and owned by the worker's user — and the removal never
// follows a symlink inside them. A folder is kept while this process holds
// its run's claim, or while the claim a previous process recorded has not
// expired and the run is not over (the Tasks API is asked; a run of another
// project, or an API that doesn't answer, keeps it). It returns the run IDs
// whose folders it removed.
func (a *Activities) SweepWorkspaces(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, sweepCheckTimeout)
	defer cancel()
	now := time.Now()
	kept := map[string]bool{}
	var removed []string
	for _, name := range a.ownFolders(a.Config.WorkspaceDir) {
		if a.Slots.Held(name) {
			kept[name] = true
			continue
		}
		rec, ok := a.readClaim(name)
		reason := "no claim holds it"
		switch {
		case ok && rec.Expires.After(now) && rec.Project != a.Config.Project:
			kept[name] = true // another project's worker shares the folder: not ours to judge
			continue
		case ok && rec.Expires.After(now):
			over, why := a.runIsOver(ctx, rec)
			if !over {
				kept[name] = true
				continue
			}
			reason = why
		case ok:
			reason = "its claim expired"
		}
		if err := os.RemoveAll(filepath.Join(a.Config.WorkspaceDir, name)); err != nil {
			a.Logger.Warn("leftover workspace not removed", zap.String("run_id", name), zap.Error(err))
			kept[name] = true
			continue
		}
		a.forgetClaim(name)
		removed = append(removed, name)
		a.Logger.Info("removed a leftover workspace", zap.String("run_id", name), zap.String("reason", reason))
	}
	// A run's spilled log entries lose their meaning with the process that
	// spilled them; the spill folders of runs whose workspace stays are left.
	spill := filepath.Join(a.Config.WorkspaceDir, ".logspill")
	for _, name := range a.ownFolders(spill) {
		if !kept[name] && !a.Slots.Held(name) {
			_ = os.RemoveAll(filepath.Join(spill, name))
		}
	}
	// Records of claims that expired without a folder to go with them.
	if entries, err := os.ReadDir(a.claimsDir()); err == nil {
		for _, e := range entries {
			runID, ok := strings.CutSuffix(e.Name(), ".json")
			if !ok {
				continue
			}
			if rec, ok := a.readClaim(runID); ok && !rec.Expires.After(now) && !kept[runID] {
				a.forgetClaim(runID)
			}
		}
	}
	return removed
}

// ownFolders lists the run folders of dir that the worker made: real
// directories named by a run ID and owned by the worker's user.
func (a *Activities) ownFolders(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		if !runFolder.MatchString(e.Name()) {
			continue
		}
		info, err := os.Lstat(filepath.Join(dir, e.Name()))
		if err != nil || !info.IsDir() {
			continue // a symlink, a file, or gone
		}
		if st, ok := info.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Geteuid() {
			continue
		}
		names = append(names, e.Name())
	}
	return names
}

// runIsOver asks the Tasks API whether rec's run has ended (or is gone), so
// that nothing of it can come back for its workspace.
func (a *Activities) runIsOver(ctx context.Context, rec claimRecord) (bool, string) {
	run, err := a.API.GetRun(ctx, rec.TaskID, rec.RunID)
	switch {
	case tasksapi.IsNotFound(err):
		return true, "its run no longer exists"
	case err != nil:
		a.Logger.Info("leftover workspace kept: its run could not be read", zap.String("run_id", rec.RunID), zap.String("error", a.redactError(err)))
		return false, ""
	case run.Status.Terminal():
		return true, "its run is " + string(run.Status)
	}
	return false, ""
}
