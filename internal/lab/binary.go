package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"testing"
)

// The project's programs the tests run (portal, controller, cwbrowse), each
// built once per test process into one temporary directory.
var (
	binMu   sync.Mutex
	binDir  string
	binErrs = map[string]error{}
	binMade = map[string]string{}
)

// Binary builds the Go package pkg (an import path, e.g.
// github.com/civicwifi/civicwifi/portal/cmd/portal) once per test process
// and returns the executable's path. A test binary that uses it should call
// RemoveBinaries from its TestMain.
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	if p, ok := binMade[pkg]; ok {
		return p
	}
	if err, ok := binErrs[pkg]; ok {
		t.Fatal(err)
	}
	if binDir == "" {
		d, err := os.MkdirTemp("", "cw-lab-bin-")
		if err != nil {
			t.Fatal(err)
		}
		binDir = d
	}
	p := filepath.Join(binDir, path.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", p, pkg).CombinedOutput(); err != nil {
		binErrs[pkg] = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		t.Fatal(binErrs[pkg])
	}
	binMade[pkg] = p
	return p
}

// RemoveBinaries deletes what Binary built.
func RemoveBinaries() {
	binMu.Lock()
	defer binMu.Unlock()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	binDir, binMade, binErrs = "", map[string]string{}, map[string]error{}
}
