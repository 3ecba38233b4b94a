// Package proctest looks at processes the way tests need to: whether one is
// still running, and which process started it. Production code never asks,
// so this lives with the tests rather than in internal/process.
package proctest

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Alive reports whether pid is a running process; a zombie waiting for its
// parent to reap it counts as gone.
func Alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	fields, err := stat(pid)
	return err == nil && len(fields) > 0 && fields[0] != "Z"
}

// Parent is the parent of pid.
func Parent(pid int) (int, error) {
	fields, err := stat(pid)
	if err != nil {
		return 0, err
	}
	if len(fields) < 2 {
		return 0, fmt.Errorf("/proc/%d/stat has no parent", pid)
	}
	return strconv.Atoi(fields[1])
}

// stat is /proc/pid/stat after the command name, which is in parentheses and
// may hold spaces: state, parent, ...
func stat(pid int) ([]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:])), nil
}
