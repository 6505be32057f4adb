package sites

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// readmeBlock returns the README's code block that starts with the command.
func readmeBlock(t *testing.T, command string) string {
	t.Helper()
	readme := string(mustRead(t, "README.md"))
	_, block, ok := strings.Cut(readme, "```\n"+command+"\n")
	if !ok {
		t.Fatalf("README.md has no block starting with %q", command)
	}
	block, _, _ = strings.Cut(block, "```")
	return block
}

func editVoghera(t *testing.T, edits [][2]string) []byte {
	t.Helper()
	s := string(mustRead(t, "../../../sites.yaml"))
	for _, e := range edits {
		if !strings.Contains(s, e[0]) {
			t.Fatalf("sites.yaml has no %q", e[0])
		}
		s = strings.Replace(s, e[0], e[1], 1)
	}
	return []byte(s)
}

// The README's examples are real output, so the docs cannot drift.
func TestREADMEExamples(t *testing.T) {
	bad := editVoghera(t, [][2]string{
		{"down: 5mbit", "down: 5 Mbps"},
		{"methods: [click-through, sms, spid]", "methods: [click-through, sms, spdi]"},
		{"      - comune.voghera.pv.it\n\n  - name: culture", "      - comune.voghera.pv.it\n      - gstatic.com\n\n  - name: culture"},
		{"    policy: parks\n    client_network: {address: 10.20.4.1/22", "    policy: prks\n    client_network: {address: 10.20.4.1/22"},
		{"mac: 02:76:67:00:05:01", "mac: 02:76:67:00:02:01"},
		{"credential: file:/etc/civicwifi/gateways/gallini-gw1.pub", "credential: 7Hq2xVt9LmZ0pR4sW8yB1cN6kD3f"},
	})
	_, err := Parse("sites.yaml", bad)
	if err == nil {
		t.Fatal("the broken file parses")
	}
	if diff := cmp.Diff(readmeBlock(t, "$ controller validate sites.yaml"), err.Error()+"\n"); diff != "" {
		t.Errorf("README's validate example (-README +real)\n%s", diff)
	}

	old, err := Parse("old-sites.yaml", mustRead(t, "../../../sites.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	new, err := Parse("sites.yaml", editVoghera(t, [][2]string{
		{"    policy: parks\n    client_network: {address: 10.20.4.1/22", "    policy: parks\n    overrides: {down: 2mbit}\n    client_network: {address: 10.20.4.1/22"},
		{"        location: Pista ciclabile, lato laghetto\n", "        location: Pista ciclabile, lato laghetto\n" +
			"        radios:\n          - {band: 2.4ghz, channel: 11, tx_power: 20}\n" +
			"      - mac: 02:76:67:00:02:04\n        model: TP-Link EAP225-Outdoor v3\n        location: Ingresso est\n"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	got := "Comparing sites.yaml against old-sites.yaml.\n\n" + RenderPlan(Diff(old, new))
	if diff := cmp.Diff(readmeBlock(t, "$ controller plan sites.yaml --against old-sites.yaml"), got); diff != "" {
		t.Errorf("README's plan example (-README +real)\n%s", diff)
	}
}
