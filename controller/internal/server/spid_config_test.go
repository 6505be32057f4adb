package server

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseConfigSPID(t *testing.T) {
	const base = "sites: /s.yaml\nsigning_key: /k\n"
	for _, tc := range []struct {
		name, in string
		want     SPIDConfig
		err      string
	}{
		{name: "no block: off", in: base},
		{
			name: "full, relative paths",
			in: base + "spid:\n  entity_id: https://wifi.comune.prova.it/spid\n  public_url: https://wifi.comune.prova.it/\n" +
				"  key: spid/sp.key\n  certificate: spid/sp.crt\n  idp_registry: /var/lib/civicwifi/spid-idps.xml\n",
			want: SPIDConfig{EntityID: "https://wifi.comune.prova.it/spid", PublicURL: "https://wifi.comune.prova.it",
				Key: "/etc/cw/spid/sp.key", Certificate: "/etc/cw/spid/sp.crt", IdPRegistry: "/var/lib/civicwifi/spid-idps.xml"},
		},
		{
			name: "missing keys and a bad URL",
			in:   base + "spid:\n  entity_id: wifi.comune.prova.it\n  public_url: https://x.example/?a=1\n",
			err: "/etc/cw/controller.yaml:4:3: spid.key: missing (the SP's PEM RSA private key file)\n" +
				"/etc/cw/controller.yaml:4:3: spid.certificate: missing (the SP's PEM certificate, as registered with AgID)\n" +
				"/etc/cw/controller.yaml:4:3: spid.idp_registry: missing (a local copy of AgID's SPID registry metadata)\n" +
				"/etc/cw/controller.yaml:4:14: spid.entity_id: \"wifi.comune.prova.it\" is not an http(s) URL without query (e.g. https://wifi.comune.example.it/spid)\n" +
				"/etc/cw/controller.yaml:5:15: spid.public_url: \"https://x.example/?a=1\" is not an http(s) URL without query (e.g. https://wifi.comune.example.it/spid)",
		},
		{name: "unknown key", in: base + "spid:\n  entity: x\n", err: "unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig("/etc/cw/controller.yaml", []byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, c.SPID); diff != "" {
				t.Errorf("spid (-want +got):\n%s", diff)
			}
			if c.SPID.Enabled() != (tc.want.EntityID != "") {
				t.Errorf("Enabled %v", c.SPID.Enabled())
			}
		})
	}
}
