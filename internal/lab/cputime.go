package lab

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// CPUTime is the CPU time of a process, from /proc/<pid>/stat: Self is its
// user and system time, Children that of the children it has waited for
// (a daemon's tc, ipset and iptables runs).
type CPUTime struct {
	Self, Children time.Duration
}

// userHZ is the unit of /proc/<pid>/stat times (USER_HZ, 100 on Linux).
const userHZ = 100

// ProcessCPU reads pid's CPU time.
func ProcessCPU(pid int) (CPUTime, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return CPUTime{}, err
	}
	c, err := parseStat(string(b))
	if err != nil {
		return CPUTime{}, fmt.Errorf("parsing /proc/%d/stat: %w", pid, err)
	}
	return c, nil
}

// parseStat reads utime, stime, cutime and cstime (fields 14 to 17 in
// proc(5)) of a stat line. They are counted after the command name's
// closing parenthesis: the name may hold spaces and parentheses.
func parseStat(s string) (CPUTime, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return CPUTime{}, fmt.Errorf("no command name in %q", s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return CPUTime{}, fmt.Errorf("%d fields after the command name, want at least 15", len(f))
	}
	var t [4]int64
	for j := range t {
		n, err := strconv.ParseInt(f[11+j], 10, 64)
		if err != nil {
			return CPUTime{}, fmt.Errorf("field %d: %w", 14+j, err)
		}
		t[j] = n
	}
	tick := time.Second / userHZ
	return CPUTime{Self: time.Duration(t[0]+t[1]) * tick, Children: time.Duration(t[2]+t[3]) * tick}, nil
}
