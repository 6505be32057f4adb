package apapi

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/civicwifi/civicwifi/internal/lab"
)

// TestLabAPRollback runs the AP scripts under busybox in a lab client
// namespace (an AP on the site's LAN, identified by its real eth0 MAC) and
// the controller in the upstream namespace, reached through the gateway.
// The AP enrolls, applies its config, takes a new SSID; then the operator
// sets VLAN 0, which puts the AP's uplink untagged into the client bridge:
// the ubus stand-in does what netifd would, the AP really loses its
// address, its check-ins fail, and once rollback_after passes it restores
// the previous uci values, gets its address back and reports the rollback.
// Finally it stops checking in and shows offline after K intervals.
func TestLabAPRollback(t *testing.T) {
	lab.Require(t, "ip", "bridge", "busybox", "curl")
	l := lab.NewT(t, lab.Options{Clients: 1, RouteIPv4: true})
	ln, err := l.Upstream.Listen("tcp", net.JoinHostPort(l.UpstreamIP.String(), "8443"))
	if err != nil {
		t.Fatal(err)
	}
	c := startController(t, ln, l.UpstreamIP.AsSlice(), Options{Interval: 30 * time.Second, MissedCheckins: 3, RollbackAfter: 2 * time.Second})
	c1 := l.Clients[0]
	mac := c1.MAC.String()
	c.sites.m[mac] = parkConfig()
	a := newAP(t, c, "", &c1.NS) // MAC from /sys/class/net/eth0/address
	a.env = append(a.env, "CW_STUB_MGMT_DEV=eth0", "CW_STUB_MGMT_ADDR="+c1.IP.String()+"/22", "CW_STUB_MGMT_GW="+l.GatewayIP.String())
	ctx := context.Background()

	a.mustRun("cw-ap-provision")
	a.mustRun("cw-ap-checkin") // applies v1
	if diff := cmp.Diff(firstApply("Voghera Free WiFi"), a.calls("uci!", "ubus", "wifi")); diff != "" {
		t.Errorf("first apply: calls (-want +got):\n%s", diff)
	}
	a.mustRun("cw-ap-checkin") // confirms v1

	c.sites.edit(mac, func(cf *Config) { cf.SSID = "Parco Pertini" })
	a.mustRun("cw-ap-checkin")
	want := []string{
		"uci [set] [wireless.cw_radio0.ssid=Parco Pertini]",
		"uci [set] [wireless.cw_radio1.ssid=Parco Pertini]",
		"uci [commit] [wireless]",
		"wifi [reload]",
	}
	if diff := cmp.Diff(want, a.calls("uci!", "ubus", "wifi")); diff != "" {
		t.Errorf("SSID change: calls (-want +got):\n%s", diff)
	}
	a.mustRun("cw-ap-checkin")
	good, _ := c.sites.DesiredAP(mac)
	v2 := ConfigVersion(good)
	rec, err := c.reg.GetAP(ctx, mac)
	if err != nil || rec.AppliedVersion != v2 || len(rec.Radios) != 2 || rec.Radios[0].SSID != "Parco Pertini" {
		t.Fatalf("after the SSID change: %+v, %v; want applied %s, radios with SSID Parco Pertini", rec, err, v2)
	}

	// The mistake: VLAN 0 takes the uplink out of the management network.
	c.sites.edit(mac, func(cf *Config) { cf.VLAN = 0 })
	bad, _ := c.sites.DesiredAP(mac)
	v3 := ConfigVersion(bad)
	applied := time.Now()
	a.mustRun("cw-ap-checkin")
	want = []string{
		"uci [-q] [delete] [network.cw_up.type]",
		"uci [-q] [delete] [network.cw_up.ifname]",
		"uci [-q] [delete] [network.cw_up.vid]",
		"uci [-q] [delete] [network.cw_up.name]",
		"uci [-q] [delete] [network.cw_up]",
		"uci [set] [network.cw_br.ports=eth0]",
		"uci [commit] [network]",
		"ubus [call] [network] [reload]",
		"wifi [reload]",
	}
	if diff := cmp.Diff(want, a.calls("uci!", "ubus", "wifi")); diff != "" {
		t.Errorf("applying VLAN 0: calls (-want +got):\n%s", diff)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	if err := c1.Ping(pingCtx, l.GatewayIP); err == nil {
		t.Error("the AP still reaches the gateway after losing its uplink")
	}
	cancel()

	// Check-ins now fail; before rollback_after nothing is undone, after it
	// the previous values come back.
	var rolled bool
	for i := 0; i < 40 && !rolled; i++ {
		rc, out := a.run("cw-ap-checkin")
		if rc == 0 {
			t.Fatalf("check-in succeeded without an address:\n%s", out)
		}
		rolled = strings.Contains(a.syslog(), "restoring the previous config")
		if !rolled {
			if got := a.calls("uci!", "ubus", "wifi"); len(got) != 0 {
				t.Fatalf("a failed check-in before the deadline changed things: %q", got)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	waited := time.Since(applied)
	if !rolled {
		t.Fatalf("no rollback after %v; syslog:\n%s", waited, a.syslog())
	}
	t.Logf("rolled back %v after applying (rollback_after 2s; uptime counts whole seconds, check-ins every 250ms)", waited.Round(10*time.Millisecond))
	if waited < time.Second || waited > 4*time.Second {
		t.Errorf("rollback came %v after applying; want 2s, give or take the 1s uptime steps", waited)
	}
	want = []string{
		"uci [set] [network.cw_br.ports=eth0.20]",
		"uci [set] [network.cw_up=device]",
		"uci [set] [network.cw_up.name=eth0.20]",
		"uci [set] [network.cw_up.vid=20]",
		"uci [set] [network.cw_up.ifname=eth0]",
		"uci [set] [network.cw_up.type=8021q]",
		"uci [commit] [network]",
		"ubus [call] [network] [reload]",
		"wifi [reload]",
	}
	if diff := cmp.Diff(want, a.calls("uci!", "ubus", "wifi")); diff != "" {
		t.Errorf("rollback: calls (-want +got):\n%s", diff)
	}
	if err := c1.Ping(ctx, l.GatewayIP); err != nil {
		t.Errorf("the AP does not reach the gateway after the rollback: %v", err)
	}

	// The next check-in gets through and reports it; v3 is not applied again.
	a.mustRun("cw-ap-checkin")
	if got := a.calls("uci!", "ubus", "wifi"); len(got) != 0 {
		t.Errorf("the rolled-back config was applied again: %q", got)
	}
	rec, _ = c.reg.GetAP(ctx, mac)
	wantRB := &Rollback{Version: v3, Reason: "controller unreachable for 2s after applying"}
	if diff := cmp.Diff(wantRB, rec.LastRollback); diff != "" || rec.AppliedVersion != v2 {
		t.Errorf("record after the rollback: applied %q (want %q), rollback (-want +got):\n%s", rec.AppliedVersion, v2, diff)
	}
	if !strings.Contains(c.log.String(), "access point rolled back a config") {
		t.Errorf("controller did not log the rollback:\n%s", c.log.String())
	}
	a.mustRun("cw-ap-checkin")
	if rec, _ = c.reg.GetAP(ctx, mac); rec.LastRollback == nil {
		t.Error("rollback record lost")
	}
	if st := a.read(filepath.Join(a.dir, "state", "rollback")); st != "" {
		t.Errorf("rollback report kept after it was delivered: %q", st)
	}

	// The operator fixes sites.yaml with another VLAN: applied and confirmed.
	c.sites.edit(mac, func(cf *Config) { cf.VLAN = 30 })
	a.mustRun("cw-ap-checkin")
	a.mustRun("cw-ap-checkin")
	fixed, _ := c.sites.DesiredAP(mac)
	if rec, _ = c.reg.GetAP(ctx, mac); rec.AppliedVersion != ConfigVersion(fixed) || a.uci("network.cw_br.ports") != "eth0.30" {
		t.Errorf("after the fix: applied %q ports %q; want %q, eth0.30", rec.AppliedVersion, a.uci("network.cw_br.ports"), ConfigVersion(fixed))
	}

	// The AP goes silent: offline after 3 intervals of 30s, not before.
	c.clock.Add(90 * time.Second)
	if st, _ := c.srv.Statuses(ctx, c.clock.Now()); len(st) != 1 || st[0].Offline {
		t.Errorf("offline at exactly 3 intervals: %+v", st)
	}
	c.clock.Add(time.Second)
	if st, _ := c.srv.Statuses(ctx, c.clock.Now()); len(st) != 1 || !st[0].Offline {
		t.Errorf("not offline after 3 missed intervals: %+v", st)
	}
}
