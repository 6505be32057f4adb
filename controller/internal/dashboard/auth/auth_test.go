package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var cheap = Params{Memory: 8 * 1024, Time: 1, Threads: 1}

func TestParseAccounts(t *testing.T) {
	h, err := HashPasswordWith("pw", cheap)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, file, want string
	}{
		{"fields", "ida:it\n", "admins:1:1: want name:role:hash, got 2 fields"},
		{"role", "# c\nida:admin:" + h + "\n", `admins:2:5: unknown role "admin" (one of it, operator, auditor)`},
		{"name", "Ida Rossi:it:" + h, `admins:1:1: account name "Ida Rossi": use 1-64 of a-z 0-9 . _ @ - starting with a letter or digit`},
		{"hash", "ida:it:$2y$10$abcdefghijklmnopqrstuv", "admins:1:8: not an argon2id hash ($argon2id$v=19$m=...,t=...,p=...$salt$key): make one with controller admin add"},
		{"cheap params", "ida:it:" + strings.Replace(h, "m=8192", "m=64", 1), `admins:1:8: argon2id parameters "m=64,t=1,p=1" out of range (m 8192..2097152 KiB, t 1..20, p >= 1)`},
		{"duplicate", "ida:it:" + h + "\n\nida:auditor:" + h, `admins:3:1: account "ida" already on line 1`},
		{"all at once", "x\nida:boss:" + h, "admins:1:1: want name:role:hash, got 1 fields\nadmins:2:5: unknown role \"boss\" (one of it, operator, auditor)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseAccounts("admins", []byte(tc.file))
			if err == nil || err.Error() != tc.want {
				t.Errorf("got %v\nwant %s", err, tc.want)
			}
		})
	}
	got, err := ParseAccounts("admins", []byte("# dashboard\n\nida:it:"+h+"\r\noscar:operator:"+h+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Account{{"ida", IT, h}, {"oscar", Operator, h}}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestPasswordHash(t *testing.T) {
	h, err := HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=3,p=2$") {
		t.Errorf("hash %s", h)
	}
	h2, _ := HashPassword("correct horse battery")
	if h == h2 {
		t.Error("two hashes of one password are equal: no salt?")
	}
	for pw, want := range map[string]bool{"correct horse battery": true, "correct horse batterY": false, "": false} {
		if ok, err := VerifyPassword(h, pw); err != nil || ok != want {
			t.Errorf("verify %q: %v %v, want %v", pw, ok, err, want)
		}
	}
	if _, err := HashPassword(""); err == nil {
		t.Error("empty password hashed")
	}
}

func TestSetAccount(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admins")
	h1, _ := HashPasswordWith("one", cheap)
	h2, _ := HashPasswordWith("two", cheap)
	if err := SetAccount(path, Account{"ida", IT, h1}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(mustRead(t, path), []byte("# Oscar runs the night shift\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := SetAccount(path, Account{"oscar", Operator, h1}); err != nil {
		t.Fatal(err)
	}
	if err := SetAccount(path, Account{"ida", Auditor, h2}); err != nil { // replaces in place
		t.Fatal(err)
	}
	want := "# civicwifi dashboard accounts: name:role:argon2id-hash (controller admin add)\nida:auditor:" + h2 + "\n# Oscar runs the night shift\noscar:operator:" + h1 + "\n"
	if diff := cmp.Diff(want, string(mustRead(t, path))); diff != "" {
		t.Errorf("file (-want +got):\n%s", diff)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	// A file with a problem is not rewritten; a readable one is not loaded.
	os.WriteFile(path, []byte("ida:root:x\n"), 0o600)
	if err := SetAccount(path, Account{"oscar", Operator, h1}); err == nil || string(mustRead(t, path)) != "ida:root:x\n" {
		t.Errorf("rewrote a broken file: %v", err)
	}
	os.WriteFile(path, []byte("ida:it:"+h1+"\n"), 0o644)
	os.Chmod(path, 0o644)
	if _, err := LoadAccounts(path); err == nil || !strings.Contains(err.Error(), "make it 0600") {
		t.Errorf("loaded a world-readable file: %v", err)
	}
	if err := SetAccount(path, Account{"Bad Name", IT, h1}); err == nil {
		t.Error("bad name accepted")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRolePermissions(t *testing.T) {
	all := []Perm{SeeNetwork, Kick, Extend, Vouchers, Poster, Reports, Exports, AuditLog}
	want := map[Role]string{IT: "network kick extend vouchers poster reports exports audit", Operator: "network kick reports", Auditor: "reports exports audit"}
	for _, r := range Roles {
		var got []string
		for _, p := range all {
			if r.Can(p) {
				got = append(got, string(p))
			}
		}
		if g := strings.Join(got, " "); g != want[r] {
			t.Errorf("%s can %q, want %q", r, g, want[r])
		}
	}
	if Role("root").Can(Reports) {
		t.Error("an unknown role has a permission")
	}
}

// FuzzParseAccounts: no input panics; an accepted file's accounts are
// valid and written back line by line they parse to the same accounts.
func FuzzParseAccounts(f *testing.F) {
	h, _ := HashPasswordWith("pw", cheap)
	for _, s := range []string{"ida:it:" + h, "# c\n\nida:operator:" + h + "\r\n", "x:y:z", "::", "ida:it:$argon2id$v=19$m=8192,t=1,p=1$$"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		accts, err := ParseAccounts("f", []byte(s))
		if err != nil {
			return
		}
		var b strings.Builder
		for _, a := range accts {
			if CheckName(a.Name) != nil {
				t.Fatalf("accepted name %q", a.Name)
			}
			if _, err := ParseRole(string(a.Role)); err != nil {
				t.Fatalf("accepted role %q", a.Role)
			}
			b.WriteString(a.Name + ":" + string(a.Role) + ":" + a.Hash + "\n")
		}
		again, err := ParseAccounts("f", []byte(b.String()))
		if err != nil || !cmp.Equal(accts, again) {
			t.Fatalf("round trip: %v\n%v\n%v", err, accts, again)
		}
	})
}
