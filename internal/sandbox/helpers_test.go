package sandbox_test

import (
	"os"
	"syscall"
)

func sysUID(info os.FileInfo) uint32 { return info.Sys().(*syscall.Stat_t).Uid }
