package control

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// curlExample is one "$ curl ..." line of README.md and the output shown
// under it (empty if none is shown).
type curlExample struct {
	line int
	args []string
	want string
}

func readmeCurlExamples(t *testing.T) []curlExample {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []curlExample
	var cur *curlExample
	inBlock := false
	for i, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(l, "```"):
			inBlock = !inBlock
			cur = nil
		case !inBlock:
		case strings.HasPrefix(l, "$ curl "):
			out = append(out, curlExample{line: i + 1, args: shellWords(t, strings.TrimPrefix(l, "$ curl "))})
			cur = &out[len(out)-1]
		case strings.HasPrefix(l, "$ "):
			cur = nil
		case cur != nil:
			cur.want += l + "\n"
		}
	}
	return out
}

// shellWords splits a command line with single quotes, as the README writes them.
func shellWords(t *testing.T, s string) []string {
	var words []string
	var w strings.Builder
	inWord, quoted := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unbalanced quote in %q", s)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// normalizeHTTP drops the headers that change from run to run and blank
// trailing lines.
func normalizeHTTP(s string) string {
	var keep []string
	for _, l := range strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n") {
		if strings.HasPrefix(l, "Date: ") || strings.HasPrefix(l, "Content-Length: ") {
			continue
		}
		keep = append(keep, strings.TrimRight(l, " "))
	}
	return strings.TrimRight(strings.Join(keep, "\n"), "\n")
}

// TestREADMECurlExamples runs every "$ curl" line of README.md against a real
// server and compares the output with what the README shows.
func TestREADMECurlExamples(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("curl is not installed (CI=true: not skipping)")
		}
		t.Skip("curl is not installed")
	}
	path := startServer(t, &fakeService{status: sampleStatus(), clients: sampleClients()[:1], session: sampleSession()})
	examples := readmeCurlExamples(t)
	if len(examples) < 4 {
		t.Fatalf("found %d curl examples in README.md, want at least 4", len(examples))
	}
	for _, ex := range examples {
		args := make([]string, len(ex.args))
		for i, a := range ex.args {
			args[i] = strings.ReplaceAll(a, DefaultSocket, path)
		}
		out, err := exec.CommandContext(t.Context(), "curl", args...).CombinedOutput()
		if err != nil {
			t.Errorf("README.md:%d: curl %s: %v\n%s", ex.line, strings.Join(ex.args, " "), err, out)
			continue
		}
		if strings.TrimSpace(ex.want) == "" {
			continue
		}
		if diff := cmp.Diff(normalizeHTTP(ex.want), normalizeHTTP(string(out))); diff != "" {
			t.Errorf("README.md:%d: output differs (-readme +got):\n%s", ex.line, diff)
		}
	}
}

// TestREADMEShowsGoldenOutput keeps the README's `portal ctl` examples equal
// to the golden outputs.
func TestREADMEShowsGoldenOutput(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"help", "clients"} {
		want, err := os.ReadFile("testdata/" + name + ".golden")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(readme), "\n"+string(want)+"```") {
			t.Errorf("README.md does not show testdata/%s.golden verbatim in a code block", name)
		}
	}
}
