package apapi

import (
	"context"
	"crypto/sha256"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func loopbackController(t *testing.T, o Options) *controller {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startController(t, ln, net.IPv4(127, 0, 0, 1), o)
}

// firstApply is every uci change the first check-in makes on a fresh AP
// for parkConfig (radio1 is already on channel 36 and has no txpower).
func firstApply(ssid string) []string {
	return []string{
		"uci [set] [network.cw_up=device]",
		"uci [set] [network.cw_up.type=8021q]",
		"uci [set] [network.cw_up.ifname=eth0]",
		"uci [set] [network.cw_up.vid=20]",
		"uci [set] [network.cw_up.name=eth0.20]",
		"uci [set] [network.cw_br=device]",
		"uci [set] [network.cw_br.type=bridge]",
		"uci [set] [network.cw_br.name=br-cw]",
		"uci [set] [network.cw_br.ports=eth0.20]",
		"uci [set] [network.cw=interface]",
		"uci [set] [network.cw.proto=none]",
		"uci [set] [network.cw.device=br-cw]",
		"uci [set] [wireless.radio0.channel=6]",
		"uci [set] [wireless.radio0.txpower=20]",
		"uci [set] [wireless.radio0.disabled=0]",
		"uci [set] [wireless.cw_radio0=wifi-iface]",
		"uci [set] [wireless.cw_radio0.device=radio0]",
		"uci [set] [wireless.cw_radio0.mode=ap]",
		"uci [set] [wireless.cw_radio0.network=cw]",
		"uci [set] [wireless.cw_radio0.ssid=" + ssid + "]",
		"uci [set] [wireless.cw_radio0.encryption=none]",
		"uci [set] [wireless.cw_radio0.isolate=1]",
		"uci [set] [wireless.radio1.disabled=0]",
		"uci [set] [wireless.cw_radio1=wifi-iface]",
		"uci [set] [wireless.cw_radio1.device=radio1]",
		"uci [set] [wireless.cw_radio1.mode=ap]",
		"uci [set] [wireless.cw_radio1.network=cw]",
		"uci [set] [wireless.cw_radio1.ssid=" + ssid + "]",
		"uci [set] [wireless.cw_radio1.encryption=none]",
		"uci [set] [wireless.cw_radio1.isolate=1]",
		"uci [commit] [network]",
		"uci [commit] [wireless]",
		"ubus [call] [network] [reload]",
		"wifi [reload]",
	}
}

// TestScriptProvisionCheckinSSIDChange: an AP enrolls, checks in, applies
// its config; the controller changes the SSID and the next check-in sets
// exactly the two SSID options and reloads wifi once.
func TestScriptProvisionCheckinSSIDChange(t *testing.T) {
	c := loopbackController(t, Options{})
	const mac = "02:00:00:00:0a:01"
	c.sites.m[mac] = parkConfig()
	a := newAP(t, c, mac, nil)
	a.write(filepath.Join(a.stub, "clients.phy0-ap0"), "3\n")
	ctx := context.Background()

	// Enrollment.
	a.mustRun("cw-ap-provision")
	secret := a.secret()
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(secret) {
		t.Fatalf("secret file holds %q, want 64 hex digits", secret)
	}
	if fi, err := os.Stat(filepath.Join(a.dir, "secret")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(a.dir, "enroll-token")); !os.IsNotExist(err) {
		t.Errorf("enroll-token still present after enrollment (err %v)", err)
	}
	rec, err := c.reg.GetAP(ctx, mac)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(secret))
	if diff := cmp.Diff(Record{MAC: mac, Model: `TP-Link "EAP225" \ Outdoor v3`, Firmware: "OpenWrt 23.05.5 r24106-10cc5fcd00",
		SecretHash: sum[:], EnrolledAt: c.clock.Now()}, rec); diff != "" {
		t.Errorf("record after enrollment (-want +got):\n%s", diff)
	}
	if rc, out := a.run("cw-ap-provision"); rc != 0 || !strings.Contains(out, "already provisioned") {
		t.Errorf("second provisioning: exit %d, %q; want 0, already provisioned", rc, out)
	}

	// First check-in: the whole config goes in.
	v1 := ConfigVersion(parkConfig())
	a.mustRun("cw-ap-checkin")
	if diff := cmp.Diff(firstApply("Voghera Free WiFi"), a.calls("uci!", "ubus", "wifi")); diff != "" {
		t.Errorf("first apply: calls (-want +got):\n%s", diff)
	}
	// Second: confirms v1 and reports the radios as iwinfo shows them.
	a.mustRun("cw-ap-checkin")
	if got := a.calls("uci!", "ubus", "wifi"); len(got) != 0 {
		t.Errorf("check-in with nothing new changed things: %q", got)
	}
	rec, _ = c.reg.GetAP(ctx, mac)
	wantRadios := []RadioStatus{
		{Interface: "phy0-ap0", SSID: "Voghera Free WiFi", Channel: 6, TxPowerDBm: 20, Clients: 3},
		{Interface: "phy1-ap0", SSID: "Voghera Free WiFi", Channel: 36, TxPowerDBm: 20, Clients: 0},
	}
	if diff := cmp.Diff(wantRadios, rec.Radios); diff != "" {
		t.Errorf("reported radios (-want +got):\n%s", diff)
	}
	if rec.AppliedVersion != v1 || rec.Clients != 3 || rec.Firmware != "OpenWrt 23.05.5 r24106-10cc5fcd00" || rec.Uptime <= 0 {
		t.Errorf("record: applied %q clients %d firmware %q uptime %v; want %q, 3, OpenWrt 23.05.5..., > 0",
			rec.AppliedVersion, rec.Clients, rec.Firmware, rec.Uptime, v1)
	}

	// The operator changes the SSID; quotes, $, backquotes and a backslash
	// must reach uci as one literal argument and come back in the report.
	const ssid = "Parco \"Pertini\" $HOME `id` \\ ü"
	c.sites.edit(mac, func(cf *Config) { cf.SSID = ssid })
	a.mustRun("cw-ap-checkin")
	want := []string{
		"uci [set] [wireless.cw_radio0.ssid=" + ssid + "]",
		"uci [set] [wireless.cw_radio1.ssid=" + ssid + "]",
		"uci [commit] [wireless]",
		"wifi [reload]",
	}
	if diff := cmp.Diff(want, a.calls("uci!", "ubus", "wifi")); diff != "" {
		t.Errorf("SSID change: calls (-want +got):\n%s", diff)
	}
	if got := a.uci("wireless.cw_radio0.ssid"); got != ssid {
		t.Errorf("uci state ssid = %q, want %q", got, ssid)
	}
	a.mustRun("cw-ap-checkin")
	rec, _ = c.reg.GetAP(ctx, mac)
	cf, _ := c.sites.DesiredAP(mac)
	if rec.AppliedVersion != ConfigVersion(cf) || len(rec.Radios) != 2 || rec.Radios[0].SSID != ssid {
		t.Errorf("after the SSID change: applied %q radios %+v; want %q and SSID %q", rec.AppliedVersion, rec.Radios, ConfigVersion(cf), ssid)
	}

	// Secrets never reach a log.
	for name, text := range map[string]string{"AP syslog": a.syslog(), "stand-in calls": a.read(filepath.Join(a.stub, "calls.log")), "controller log": c.log.String()} {
		if strings.Contains(text, secret) || strings.Contains(text, enrollToken) {
			t.Errorf("%s holds a secret:\n%s", name, text)
		}
	}
}

// TestScriptTokensRefused: a bad token, another AP's token, an enrollment
// of an enrolled AP, a wrong enrollment token and an AP unknown to
// sites.yaml are all refused, and change nothing.
func TestScriptTokensRefused(t *testing.T) {
	c := loopbackController(t, Options{})
	const macA, macB, macX = "02:00:00:00:0a:01", "02:00:00:00:0b:02", "02:00:00:00:0c:03"
	c.sites.m[macA], c.sites.m[macB] = parkConfig(), parkConfig()
	a := newAP(t, c, macA, nil)
	b := newAP(t, c, macB, nil)
	a.mustRun("cw-ap-provision")
	b.mustRun("cw-ap-provision")
	ctx := context.Background()
	before, _ := c.reg.GetAP(ctx, macA)

	check := func(name string, x *ap, script, wantLog string) {
		t.Helper()
		rc, out := x.run(script)
		if rc == 0 {
			t.Errorf("%s: %s succeeded, want refused:\n%s", name, script, out)
		}
		if !strings.Contains(x.syslog(), wantLog) {
			t.Errorf("%s: AP syslog lacks %q:\n%s", name, wantLog, x.syslog())
		}
		if got := x.calls("uci!", "ubus", "wifi"); len(got) != 0 {
			t.Errorf("%s: refused AP changed its config: %q", name, got)
		}
		os.Remove(filepath.Join(x.stub, "syslog"))
	}

	a.write(filepath.Join(a.dir, "secret"), b.secret()+"\n")
	check("B's token for A", a, "cw-ap-checkin", "controller refused check-in of "+macA+" (HTTP 401)")
	a.write(filepath.Join(a.dir, "secret"), strings.Repeat("ab", 32)+"\n")
	check("made-up token", a, "cw-ap-checkin", "controller refused check-in of "+macA+" (HTTP 401)")
	if after, _ := c.reg.GetAP(ctx, macA); !cmp.Equal(before, after) {
		t.Errorf("A's record changed by refused check-ins:\n%s", cmp.Diff(before, after))
	}

	os.Remove(filepath.Join(a.dir, "secret"))
	a.write(filepath.Join(a.dir, "enroll-token"), enrollToken+"\n")
	check("enrolling again", a, "cw-ap-provision", "controller answered HTTP 409")
	if after, _ := c.reg.GetAP(ctx, macA); !cmp.Equal(before, after) {
		t.Errorf("A's record changed by a second enrollment:\n%s", cmp.Diff(before, after))
	}

	x := newAP(t, c, macX, nil)
	check("AP not in sites.yaml", x, "cw-ap-provision", "controller answered HTTP 403")
	c.sites.m[macX] = parkConfig()
	x.write(filepath.Join(x.dir, "enroll-token"), "guessed\n")
	check("wrong enrollment token", x, "cw-ap-provision", "controller answered HTTP 401")
	if _, err := c.reg.GetAP(ctx, macX); err != ErrUnknownAP {
		t.Errorf("refused AP got a record (err %v)", err)
	}
	for _, want := range []string{"token refused for " + macA, "already enrolled", "is not an access point of sites.yaml", "enrollment token refused for " + macX} {
		if !strings.Contains(c.log.String(), want) {
			t.Errorf("controller log lacks %q:\n%s", want, c.log.String())
		}
	}
}

// TestScriptOfflineAfterMissedCheckins: an AP that stops checking in is
// offline once K intervals pass, and online again at its next check-in.
func TestScriptOfflineAfterMissedCheckins(t *testing.T) {
	c := loopbackController(t, Options{Interval: 30 * time.Second, MissedCheckins: 3})
	const mac = "02:00:00:00:0a:01"
	c.sites.m[mac] = parkConfig()
	a := newAP(t, c, mac, nil)
	a.mustRun("cw-ap-provision")
	a.mustRun("cw-ap-checkin")
	if got := a.read(filepath.Join(a.dir, "state", "interval")); got != "30\n" {
		t.Errorf("AP stored interval %q, want 30", got)
	}
	ctx := context.Background()
	offline := func() bool {
		t.Helper()
		st, err := c.srv.Statuses(ctx, c.clock.Now())
		if err != nil || len(st) != 1 || st[0].MAC != mac {
			t.Fatalf("Statuses = %+v, %v", st, err)
		}
		return st[0].Offline
	}
	for _, step := range []struct {
		advance time.Duration
		want    bool
	}{
		{0, false},
		{89 * time.Second, false}, // two intervals and then some
		{time.Second, false},      // exactly three: not yet
		{time.Second, true},       // three missed
		{time.Hour, true},
	} {
		c.clock.Add(step.advance)
		if got := offline(); got != step.want {
			t.Errorf("%v after the check-in: offline = %v, want %v", c.clock.Now().Sub(time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)), got, step.want)
		}
	}
	a.mustRun("cw-ap-checkin")
	if offline() {
		t.Error("still offline after a check-in")
	}
	if n := strings.Count(c.log.String(), "access point online"); n != 2 {
		t.Errorf("controller logged %d online transitions, want 2:\n%s", n, c.log.String())
	}
}

// TestShellcheck: every AP script, the init script and the stand-ins pass
// shellcheck -s sh.
func TestShellcheck(t *testing.T) {
	requireTools(t, "shellcheck")
	files := []string{"cw-ap-lib.sh", "cw-ap-provision", "cw-ap-checkin", "etc/init.d/cw-ap"}
	stubs, err := filepath.Glob(filepath.Join(scriptDir, "testdata", "bin", "*"))
	if err != nil || len(stubs) < 6 {
		t.Fatalf("stand-ins: %v %v", stubs, err)
	}
	for _, s := range stubs {
		files = append(files, strings.TrimPrefix(s, scriptDir+"/"))
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			cmd := exec.Command("shellcheck", "-s", "sh", "-x", f)
			cmd.Dir = scriptDir
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("shellcheck -s sh %s: %v\n%s", f, err, out)
			}
		})
	}
}

// TestScriptLoop: "cw-ap-checkin -l" (what procd runs) checks in again and
// again at the interval the controller gives.
func TestScriptLoop(t *testing.T) {
	c := loopbackController(t, Options{Interval: time.Second})
	const mac = "02:00:00:00:0a:01"
	c.sites.m[mac] = parkConfig()
	a := newAP(t, c, mac, nil)
	a.mustRun("cw-ap-provision")
	a.write(filepath.Join(a.stub, "calls.log"), "")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "busybox", "ash", filepath.Join(scriptDir, "cw-ap-checkin"), "-l")
	cmd.Env = a.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	start := time.Now()
	var n int
	for time.Since(start) < 15*time.Second {
		n = strings.Count(a.read(filepath.Join(a.stub, "calls.log")), "uclient-fetch ")
		if n >= 4 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	el := time.Since(start)
	t.Logf("%d check-ins in %v", n, el.Round(10*time.Millisecond))
	if n < 4 {
		t.Fatalf("%d check-ins in %v, want 4 at a 1s interval; syslog:\n%s", n, el, a.syslog())
	}
	if el < 2500*time.Millisecond {
		t.Errorf("4 check-ins in %v: the loop does not wait the 1s interval", el)
	}
	rec, _ := c.reg.GetAP(context.Background(), mac)
	if rec.AppliedVersion != ConfigVersion(parkConfig()) {
		t.Errorf("applied version %q after the loop ran, want %q", rec.AppliedVersion, ConfigVersion(parkConfig()))
	}
}

// TestScriptApplyFailure: when a uci set fails half-way, the AP puts back
// every value it had changed, keeps nothing pending, and applies the config
// fully at the next check-in.
func TestScriptApplyFailure(t *testing.T) {
	c := loopbackController(t, Options{})
	const mac = "02:00:00:00:0a:01"
	c.sites.m[mac] = parkConfig()
	a := newAP(t, c, mac, nil)
	a.mustRun("cw-ap-provision")
	sorted := func(s string) []string {
		l := strings.Split(strings.TrimSpace(s), "\n")
		slices.Sort(l)
		return l
	}
	before := sorted(a.read(filepath.Join(a.stub, "uci.state")))

	env := a.env
	a.env = append(env, "CW_STUB_UCI_FAIL=wireless.cw_radio1.ssid")
	if rc, out := a.run("cw-ap-checkin"); rc == 0 {
		t.Fatalf("check-in with a failing uci set exited 0:\n%s", out)
	}
	if diff := cmp.Diff(before, sorted(a.read(filepath.Join(a.stub, "uci.state")))); diff != "" {
		t.Errorf("uci state after a failed apply (-before +after):\n%s", diff)
	}
	if !strings.Contains(a.syslog(), "failed: restoring the previous config") {
		t.Errorf("syslog lacks the failure:\n%s", a.syslog())
	}
	if _, err := os.Stat(filepath.Join(a.dir, "state", "pending")); !os.IsNotExist(err) {
		t.Errorf("a failed apply left a pending version (err %v)", err)
	}
	a.env = env
	a.mustRun("cw-ap-checkin")
	if diff := cmp.Diff(firstApply("Voghera Free WiFi"), a.calls("uci!", "ubus", "wifi")); diff != "" {
		t.Errorf("apply after the failure: calls (-want +got):\n%s", diff)
	}
}

// TestScriptRollbackAcrossReboot: a pending config whose AP reboots gets
// its full rollback_after again from the new boot before it is undone;
// then the rollback restores the previous values and is reported once the
// controller answers again. (Unreachable here: the URL points at a closed
// port; TestLabAPRollback cuts the network itself.)
func TestScriptRollbackAcrossReboot(t *testing.T) {
	c := loopbackController(t, Options{RollbackAfter: 2 * time.Second})
	const mac = "02:00:00:00:0a:01"
	c.sites.m[mac] = parkConfig()
	a := newAP(t, c, mac, nil)
	bootFile := filepath.Join(a.stub, "boot_id")
	a.write(bootFile, "boot-1\n")
	a.env = append(a.env, "CW_BOOT_ID_FILE="+bootFile)
	a.mustRun("cw-ap-provision")
	a.mustRun("cw-ap-checkin")
	a.mustRun("cw-ap-checkin") // v1 confirmed
	v1state := a.read(filepath.Join(a.stub, "uci.state"))

	c.sites.edit(mac, func(cf *Config) { cf.Radios[0].Channel = "11" })
	a.mustRun("cw-ap-checkin") // v2 pending
	if got := a.uci("wireless.radio0.channel"); got != "11" {
		t.Fatalf("channel %q after applying v2, want 11", got)
	}
	state := filepath.Join(a.stub, "uci.state")
	a.write(state, strings.Replace(a.read(state), "civicwifi.main.url="+c.url, "civicwifi.main.url=https://127.0.0.1:1", 1))
	a.write(bootFile, "boot-2\n")

	time.Sleep(2500 * time.Millisecond) // past the first deadline
	if rc, _ := a.run("cw-ap-checkin"); rc == 0 {
		t.Fatal("check-in to a closed port succeeded")
	}
	if got := a.calls("uci!", "ubus", "wifi"); len(got) != 0 || a.uci("wireless.radio0.channel") != "11" {
		t.Fatalf("rolled back right after a reboot, before the new deadline: %q", got)
	}
	var rolled bool
	for i := 0; i < 20 && !rolled; i++ {
		time.Sleep(250 * time.Millisecond)
		a.run("cw-ap-checkin")
		rolled = strings.Contains(a.syslog(), "restoring the previous config")
	}
	if !rolled {
		t.Fatalf("no rollback 2s after the reboot; syslog:\n%s", a.syslog())
	}
	want := []string{"uci [set] [wireless.radio0.channel=6]", "uci [commit] [wireless]", "wifi [reload]"}
	if diff := cmp.Diff(want, a.calls("uci!", "ubus", "wifi")); diff != "" {
		t.Errorf("rollback: calls (-want +got):\n%s", diff)
	}
	a.write(state, strings.Replace(a.read(state), "civicwifi.main.url=https://127.0.0.1:1", "civicwifi.main.url="+c.url, 1))
	a.mustRun("cw-ap-checkin")
	if got := a.read(state); got != v1state {
		t.Errorf("uci state after the rollback differs from v1's:\n%s", cmp.Diff(v1state, got))
	}
	rec, _ := c.reg.GetAP(context.Background(), mac)
	cf, _ := c.sites.DesiredAP(mac)
	if rec.LastRollback == nil || rec.LastRollback.Version != ConfigVersion(cf) || rec.AppliedVersion != ConfigVersion(parkConfig()) {
		t.Errorf("record: applied %q rollback %+v; want applied %q, rollback of %q", rec.AppliedVersion, rec.LastRollback, ConfigVersion(parkConfig()), ConfigVersion(cf))
	}
}
