package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// CleanupWorkspace removes a run's folder. It runs after success, failure and
// cancel, also when the clone failed half-way.
func (a *Activities) CleanupWorkspace(ctx context.Context, ref RunRef) error {
	defer a.Slots.Release(ref.RunID)
	_ = os.RemoveAll(a.spillDir(ref))
	ws := a.workspaceFor(ref)
	if rel, err := filepath.Rel(a.Config.WorkspaceDir, ws.Root); err != nil || rel == "." || filepath.IsAbs(rel) || rel[0] == '.' {
		return a.temporalError(fmt.Errorf("refusing to remove %s: not inside the workspace dir %s", ws.Root, a.Config.WorkspaceDir))
	}
	if err := os.RemoveAll(ws.Root); err != nil && !errors.Is(err, os.ErrNotExist) {
		return a.temporalError(fmt.Errorf("remove workspace %s: %w", ws.Root, err))
	}
	a.forgetClaim(ref.RunID)
	return nil
}
