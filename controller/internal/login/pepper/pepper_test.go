package pepper

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadAndHashes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pepper")
	for _, tc := range []struct {
		name    string
		content string
		mode    os.FileMode
		want    string // error substring; "" for success
	}{
		{"good", "  " + strings.Repeat("k", 40) + "\n", 0o600, ""},
		{"short", "0123456789", 0o600, "10 bytes, want at least 32"},
		{"readable by others", strings.Repeat("k", 40), 0o644, "chmod 600"},
		{"readable by group", strings.Repeat("k", 40), 0o640, "chmod 600"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(path)
			if err := os.WriteFile(path, []byte(tc.content), tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Load: %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := Load(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file loaded")
	}
	a, _ := New([]byte(strings.Repeat("a", 32)))
	b, _ := New([]byte(strings.Repeat("b", 32)))
	pa := a.Pseudonym("phone:+393331234567")
	if pa != a.Pseudonym("phone:+393331234567") || pa == b.Pseudonym("phone:+393331234567") || pa == a.Pseudonym("phone:+393331234568") {
		t.Error("pseudonyms are not a keyed function of the subject")
	}
	if len(pa) != 52 || strings.ToLower(pa) != pa || strings.ContainsAny(pa, "=+/") {
		t.Errorf("pseudonym %q: want 52 lower-case base32 characters", pa)
	}
	if k := a.Key("number", "+393331234567"); len(k) != 26 || k == a.Key("mac", "+393331234567") {
		t.Errorf("Key: %q, want 26 characters, distinct per purpose", k)
	}
	if (Pepper{}).Valid() {
		t.Error("the zero Pepper is valid")
	}
}
