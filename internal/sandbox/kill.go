package sandbox

import (
	"bytes"
	"os/exec"
	"strconv"
	"syscall"

	"github.com/taskworker/taskworker/internal/process"
)

// killUID kills every process that runs as uid, whatever session, group or
// environment it gave itself: a helper that runs as uid kills all it may
// signal (see runKill), then a scan of /proc catches anything left.
func killUID(uid int) {
	cmd := exec.Command("/proc/self/exe")
	cmd.Args, cmd.Env, cmd.Dir = []string{killArg0}, []string{}, "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}}
	_ = cmd.Run()
	scanAndKill(uid)
}

// scanAndKill kills every process whose real, effective or saved uid is uid.
func scanAndKill(uid int) {
	want := []byte(strconv.Itoa(uid))
	process.KillWhere("status", 50, func(status []byte) bool { return runsAs(status, want) })
}

// runsAs reports a /proc/PID/status whose Uid line holds uid as its real,
// effective or saved id. A zombie counts too: its leader may be dead while
// its other threads run.
func runsAs(status, uid []byte) bool {
	var ids [][]byte
	for _, line := range bytes.Split(status, []byte{'\n'}) {
		if rest, ok := bytes.CutPrefix(line, []byte("Uid:")); ok {
			ids = bytes.Fields(rest)
			break
		}
	}
	for i, id := range ids {
		if i < 3 && bytes.Equal(id, uid) {
			return true
		}
	}
	return false
}
