package lab

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

func TestSweep(t *testing.T) {
	t.Parallel()
	Require(t, "ip", "bridge", "sleep")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	live := NewT(t, Options{Clients: 1})

	// A dead lab: its owner's PID is that of a process that has exited and
	// been reaped, and a process still runs in one of its namespaces.
	dead, err := New(ctx, Options{Clients: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dead.Close() })
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(MarkerDir, dead.ID), []byte(strconv.Itoa(gone.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sleeper := dead.Gateway.Command(ctx, "sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sleeper.Wait() }()

	deleted, err := Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range dead.Namespaces() {
		if !slices.Contains(deleted, ns.Name) {
			t.Errorf("Sweep did not delete %s (deleted %v)", ns.Name, deleted)
		}
		if _, err := os.Stat(filepath.Join("/run/netns", ns.Name)); err == nil {
			t.Errorf("%s still exists", ns.Name)
		}
	}
	for _, ns := range live.Namespaces() {
		if slices.Contains(deleted, ns.Name) {
			t.Errorf("Sweep deleted %s of a live lab", ns.Name)
		}
	}
	if _, err := os.Stat(dead.Dir); err == nil {
		t.Errorf("Sweep left %s", dead.Dir)
	}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Error("process in a swept namespace still running")
	}
	if err := live.Gateway.Ping(ctx, live.Clients[0].IP); err != nil {
		t.Errorf("live lab broken after Sweep: %v", err)
	}
}
