package gateway

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// An open that spends a grant records its id in the same write as the
// session: spent once Open returns, also for a store opened again (a
// restart). An open the kernel refuses spends nothing itself; SpendGrant
// records the id alone.
func TestOpenSpendsGrant(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r := newRig(t, dir, nil)
	exp := r.clk.now().Add(time.Minute)
	if _, err := r.gw.Open(ctx, Grant{IP: ip1, Method: "sms", Limits: testConfig().Limits, Spends: Spent{ID: "g1", Expires: exp}}); err != nil {
		t.Fatal(err)
	}
	if spent, err := r.gw.GrantSpent("g1"); !spent || err != nil {
		t.Fatalf("after the open: spent %v (%v), want true", spent, err)
	}
	r.fw.fail = errors.New("kernel says no")
	if _, err := r.gw.Open(ctx, Grant{IP: ip2, Method: "sms", Limits: testConfig().Limits, Spends: Spent{ID: "g2", Expires: exp}}); err == nil {
		t.Fatal("open succeeded although the kernel refused")
	}
	if spent, _ := r.gw.GrantSpent("g2"); spent {
		t.Fatal("a refused open recorded its grant as spent")
	}
	if err := r.gw.SpendGrant(Spent{ID: "g2", Expires: exp}); err != nil {
		t.Fatal(err)
	}
	r.store.Close()
	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, id := range []string{"g1", "g2"} {
		if spent, err := st.IsSpent(id); !spent || err != nil {
			t.Errorf("%s after a restart: spent %v (%v), want true", id, spent, err)
		}
	}
	if spent, _ := st.IsSpent("g3"); spent {
		t.Error("an id never used is spent")
	}
}

// Pruning deletes every expired record in one pass, also long runs of
// neighbours, and keeps the others.
func TestPruneDeletesEveryExpiredRecord(t *testing.T) {
	st, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)
	var spent []Spent
	var ended []*Session
	for i := range 3000 {
		exp, end := now.Add(-time.Second), now.Add(-time.Hour)
		if i%1000 == 999 {
			exp, end = now.Add(time.Minute), now.Add(time.Hour) // kept
		}
		spent = append(spent, Spent{ID: fmt.Sprintf("g%05d", i), Expires: exp})
		ended = append(ended, &Session{ID: fmt.Sprintf("s%05d", i), MAC: mac1, IP: ip1, Started: end.Add(-time.Hour), Ended: end})
	}
	if err := st.Write([]Change{{Sessions: ended, Spent: spent}}); err != nil {
		t.Fatal(err)
	}
	if n, err := st.PruneSpent(now); n != 2997 || err != nil {
		t.Errorf("PruneSpent: %d (%v), want 2997", n, err)
	}
	if n, _ := st.SpentCount(); n != 3 {
		t.Errorf("%d spent ids left, want 3", n)
	}
	if n, err := st.PruneEnded(now); n != 2997 || err != nil {
		t.Errorf("PruneEnded: %d (%v), want 2997", n, err)
	}
	if left, _ := st.Ended(); len(left) != 3 {
		t.Errorf("%d ended sessions left, want 3", len(left))
	}
}
