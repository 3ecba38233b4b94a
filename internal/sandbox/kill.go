package sandbox

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// killUID kills every process that runs as uid (real, effective or saved),
// whatever session, group or environment it gave itself. Passes repeat while
// they find something, so what forked during one is caught by the next; the
// run's process limit bounds how many there can be.
func killUID(uid int) {
	want := []byte(strconv.Itoa(uid))
	self := os.Getpid()
	for pass := 0; pass < 50; pass++ {
		entries, err := os.ReadDir("/proc")
		if err != nil {
			return
		}
		found := 0
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == self {
				continue
			}
			status, err := os.ReadFile("/proc/" + e.Name() + "/status")
			if err != nil || !runsAs(status, want) {
				continue
			}
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				found++
			}
		}
		if found == 0 {
			return
		}
	}
}

// runsAs reports a /proc/PID/status whose Uid line holds uid as its real,
// effective or saved id; a zombie (already dead) doesn't count.
func runsAs(status, uid []byte) bool {
	var ids [][]byte
	for _, line := range bytes.Split(status, []byte{'\n'}) {
		if rest, ok := bytes.CutPrefix(line, []byte("State:")); ok && bytes.Contains(rest, []byte("Z")) {
			return false
		}
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
