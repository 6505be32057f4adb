package main

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestTuneKernel(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{
		"net/ipv4/ip_forward":                 "0\n",
		"net/bridge/bridge-nf-call-iptables":  "1\n",
		"net/ipv4/neigh/default/gc_thresh2":   "512\n",
		"net/ipv4/neigh/default/gc_thresh3":   "1024\n",
		"net/ipv6/neigh/default/gc_thresh2":   "512\n",
		"net/ipv6/neigh/default/gc_thresh3":   "100000\n", // already larger: kept
		"net/bridge/bridge-nf-call-arptables": "0\n",
	}
	for f, v := range files {
		os.MkdirAll(filepath.Join(root, filepath.Dir(f)), 0o755)
		if err := os.WriteFile(filepath.Join(root, f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	// A /20: 4,094 clients.
	if err := tuneKernel(log, root, netip.MustParsePrefix("10.20.0.0/20")); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for f := range files {
		b, _ := os.ReadFile(filepath.Join(root, f))
		got[f] = strings.TrimSpace(string(b))
	}
	want := map[string]string{
		"net/ipv4/ip_forward":                 "1",
		"net/bridge/bridge-nf-call-iptables":  "0",
		"net/ipv4/neigh/default/gc_thresh2":   "4606",
		"net/ipv4/neigh/default/gc_thresh3":   "5118",
		"net/ipv6/neigh/default/gc_thresh2":   "8700",
		"net/ipv6/neigh/default/gc_thresh3":   "100000",
		"net/bridge/bridge-nf-call-arptables": "0",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sysctls (-want +got):\n%s", diff)
	}
	if strings.Contains(logs.String(), "neighbour table limits are the host's") {
		t.Errorf("limits visible here, yet logged as the host's:\n%s", logs.String())
	}

	// In a network namespace other than the host's the limits are not
	// there: nothing fails, the wanted values are logged.
	logs.Reset()
	os.RemoveAll(filepath.Join(root, "net/ipv4/neigh"))
	os.RemoveAll(filepath.Join(root, "net/ipv6"))
	if err := tuneKernel(log, root, netip.MustParsePrefix("10.20.0.0/22")); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "net.ipv4.neigh.default.gc_thresh3>=2046") {
		t.Errorf("log lacks the wanted IPv4 limit for a /22:\n%s", logs.String())
	}

	// A value that is not a number is an error, and left as it was.
	os.WriteFile(filepath.Join(root, "net/ipv4/ip_forward"), []byte("1\n"), 0o644)
	os.MkdirAll(filepath.Join(root, "net/ipv4/neigh/default"), 0o755)
	os.WriteFile(filepath.Join(root, "net/ipv4/neigh/default/gc_thresh2"), []byte("lots\n"), 0o644)
	if err := tuneKernel(log, root, netip.MustParsePrefix("10.20.0.0/22")); err == nil || !strings.Contains(err.Error(), `"lots" is not a number`) {
		t.Errorf("err = %v, want the unreadable limit named", err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "net/ipv4/neigh/default/gc_thresh2")); string(b) != "lots\n" {
		t.Errorf("the unreadable limit became %q, want it left as it was", b)
	}
}
