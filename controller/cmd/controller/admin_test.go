package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/civicwifi/civicwifi/controller/internal/dashboard/auth"
)

func TestAdminAdd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin-accounts")
	runAdmin := func(stdin string, args ...string) (int, string) {
		t.Helper()
		adminStdin = strings.NewReader(stdin)
		defer func() { adminStdin = os.Stdin }()
		var out, errb bytes.Buffer
		code := run(context.Background(), &env{stdout: &out, stderr: &errb}, append([]string{"admin"}, args...))
		return code, out.String() + errb.String()
	}
	if code, out := runAdmin("a long enough passphrase\n", "add", "-accounts", path, "-role", "it", "ida"); code != 0 || !strings.Contains(out, "ida (it) written to "+path) {
		t.Fatalf("add: %d %s", code, out)
	}
	accts, err := auth.LoadAccounts(path)
	if err != nil || len(accts) != 1 || accts[0].Name != "ida" || accts[0].Role != auth.IT {
		t.Fatalf("accounts %+v %v", accts, err)
	}
	if ok, _ := auth.VerifyPassword(accts[0].Hash, "a long enough passphrase"); !ok {
		t.Error("the stored hash does not verify the password")
	}
	if strings.Contains(string(mustReadFile(t, path)), "passphrase") {
		t.Error("the password is in the file")
	}
	before := mustReadFile(t, path)
	for _, tc := range []struct {
		stdin string
		args  []string
		code  int
		msg   string
	}{
		{"short\n", []string{"add", "-accounts", path, "oscar"}, 1, "the password has 5 characters: give at least 12 (nothing written)"},
		{"", []string{"add", "-accounts", path, "oscar"}, 1, "reading the password from stdin"},
		{"a long enough passphrase\n", []string{"add", "-accounts", path, "-role", "root", "oscar"}, 1, `unknown role "root"`},
		{"a long enough passphrase\n", []string{"add", "-accounts", path, "Oscar Bianchi"}, 1, `account name "Oscar Bianchi"`},
		{"", []string{"remove", "oscar"}, 2, "usage: controller admin"},
	} {
		code, out := runAdmin(tc.stdin, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.msg) {
			t.Errorf("%v: %d %q, want %d with %q", tc.args, code, out, tc.code, tc.msg)
		}
	}
	if !bytes.Equal(before, mustReadFile(t, path)) {
		t.Error("a refused add changed the file")
	}
	if code, out := runAdmin("", "list", "-accounts", path); code != 0 || out != "ida\tit\n" {
		t.Errorf("list: %d %q", code, out)
	}
}

func mustReadFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
