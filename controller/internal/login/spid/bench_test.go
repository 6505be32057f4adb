package spid

import "testing"

// BenchmarkLogin is one whole SPID login over loopback: spid/start (signed gateway request), the login page (an
// RSA-2048 signature), the IdP (two signatures, its own work), the ACS (two signature checks and the Store's
// replay and state keys on bbolt) and spid/grant (an Ed25519 grant).
func BenchmarkLogin(b *testing.B) {
	h := newHarness(b)
	n := 0
	for b.Loop() {
		n++
		br := newBrowser(b)
		end := br.walk(h.start("parco-gw1"))
		if _, err := h.grant("parco-gw1", stateOf(end)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(h.acsTime.Load())/float64(n)/1e6, "acs-ms/op")
}
