package gateway

import (
	"context"
	"testing"
)

// Logout ends the session and revokes it in the kernel; a second logout
// (or one without a session) is fine; and a resident who logged out may log
// in again by click-through at once.
func TestLogout(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, "", nil)
	if _, err := r.gw.ClickThrough(ctx, ip1); err != nil {
		t.Fatal(err)
	}
	if err := r.gw.Logout(ctx, ip1); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.gw.SessionFor(ip1); ok {
		t.Fatal("session still active after logout")
	}
	if _, ok := r.fw.allowed[ip1]; ok {
		t.Error("still allowed in the firewall")
	}
	ended, err := r.store.Ended()
	if err != nil || len(ended) != 1 || ended[0].EndReason != "logout" {
		t.Fatalf("ended sessions %v (%v), want one ended by logout", ended, err)
	}
	if err := r.gw.Logout(ctx, ip1); err != nil {
		t.Errorf("second logout: %v", err)
	}
	if err := r.gw.Logout(ctx, ip2); err != nil {
		t.Errorf("logout without a session: %v", err)
	}
	if _, err := r.gw.ClickThrough(ctx, ip1); err != nil {
		t.Errorf("click-through after logout: %v", err)
	}
}
