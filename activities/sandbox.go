package activities

import (
	"fmt"

	"github.com/taskworker/taskworker/internal/acp"
	"github.com/taskworker/taskworker/internal/agent"
	"github.com/taskworker/taskworker/internal/logstream"
	"github.com/taskworker/taskworker/internal/process"
	"github.com/taskworker/taskworker/internal/sandbox"
)

// runBox is a run's sandbox while its agent works; without a sandbox
// configured, the agent runs as the worker's child.
type runBox struct{ run *sandbox.Run }

// startSandbox puts the workspace's agent folders in the hands of a new
// sandboxed run, and says in the run's log how the agent is isolated.
func (a *Activities) startSandbox(ws Workspace, log *logstream.Stream) (runBox, error) {
	if a.Sandbox == nil {
		return runBox{}, nil
	}
	var readOnly []string
	if p, ok := a.Agent.(agent.ReadOnlyPaths); ok {
		readOnly = p.ReadOnlyPaths()
	}
	run, err := a.Sandbox.Start(sandbox.Dirs{Writable: ws.agentDirs(), ReadOnly: readOnly})
	if err != nil {
		return runBox{}, fmt.Errorf("start the run's sandbox: %w", err)
	}
	if warning := a.Sandbox.Warning(); warning != "" {
		log.Console(acp.LevelWarn, warning)
	} else if uid := run.UID(); uid >= 0 {
		log.Console(acp.LevelInfo, fmt.Sprintf("the agent runs in the %s sandbox as uid %d", run.Mode(), uid))
	}
	return runBox{run: run}, nil
}

func (b runBox) isolation() process.Isolation {
	if b.run == nil {
		return nil
	}
	return b.run.Isolation()
}

// close ends whatever the agent left running and gives its uid back.
func (b runBox) close() {
	if b.run != nil {
		b.run.Close()
	}
}
