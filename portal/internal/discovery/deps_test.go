package discovery

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDaemonWithoutLayers keeps gopacket/layers (and pcapgo, which imports
// it) out of the gateway daemon: importing layers alone costs ~7 MB of RSS
// at init (README.md, "Why not gopacket/layers").
func TestDaemonWithoutLayers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no go tool on PATH") // CI must check this, never skip it
		}
		t.Skip("no go tool on PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", "github.com/civicwifi/civicwifi/portal/cmd/portal").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/google/gopacket") {
			t.Errorf("portal imports %s", pkg)
		}
	}
}
