package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// MarkerDir holds one file per live lab, named by its ID and holding the
// owning process's PID, so that Sweep can tell leftovers from labs in use.
const MarkerDir = "/run/civicwifi-lab"

// nsName matches the lab's namespace names: cwu-<id>, cwg-<id>, cwc<N>-<id>.
var nsName = regexp.MustCompile(`^cw(?:u|g|c[0-9]+)-([0-9a-f]{5})$`)

// labID matches a lab ID: 5 lower-case hex digits.
var labID = regexp.MustCompile(`^[0-9a-f]{5}$`)

// Sweep deletes the namespaces of labs whose owning process is gone (or
// that have no marker at all), killing what still runs inside them, and
// removes stale markers and the dead labs' directories. It returns the namespaces it deleted.
func Sweep(ctx context.Context) ([]string, error) {
	byID := map[string][]string{}
	entries, err := os.ReadDir("/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("sweeping: %w", err)
	}
	for _, e := range entries {
		if m := nsName.FindStringSubmatch(e.Name()); m != nil {
			byID[m[1]] = append(byID[m[1]], e.Name())
		}
	}
	etc, err := os.ReadDir(EtcDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("sweeping: %w", err)
	}
	for _, e := range etc {
		if m := nsName.FindStringSubmatch(e.Name()); m != nil && !slices.Contains(byID[m[1]], e.Name()) {
			byID[m[1]] = append(byID[m[1]], e.Name())
		}
	}
	markers, err := os.ReadDir(MarkerDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("sweeping: %w", err)
	}
	for _, m := range markers {
		if !labID.MatchString(m.Name()) {
			continue // a marker being written (.tmp-*), or not ours
		}
		if _, ok := byID[m.Name()]; !ok {
			byID[m.Name()] = nil
		}
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var deleted []string
	var errs []error
	for _, id := range ids {
		if ownerAlive(id) {
			continue
		}
		names := byID[id]
		sort.Strings(names)
		for _, name := range names {
			if err := deleteNS(ctx, name); err != nil {
				errs = append(errs, err)
				continue
			}
			deleted = append(deleted, name)
		}
		if err := os.Remove(filepath.Join(MarkerDir, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "cwlab-"+id+"-*"))
		for _, d := range dirs {
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return deleted, fmt.Errorf("sweeping: %w", err)
	}
	return deleted, nil
}

// ownerAlive reports whether lab id has a marker naming a live process.
func ownerAlive(id string) bool {
	b, err := os.ReadFile(filepath.Join(MarkerDir, id))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return false
	}
	err = syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
