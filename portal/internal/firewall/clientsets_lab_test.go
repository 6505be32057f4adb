package firewall

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// What the poll and the reconcile read of the client sets through their
// own netlink socket is what `ipset list` shows, read after read: the
// index follows each new reading (a deleted element, a flushed set, a
// changed MAC), and Usage is what the ipset command's figures give.
func TestKernelClientSetsReadAsIpsetShows(t *testing.T) {
	s := newSite(t)
	twoClientsThrough(t, s)

	// Timeouts tick between two reads: compared within a second.
	approx := cmp.Comparer(func(a, b clientElem) bool {
		d := int64(a.timeout) - int64(b.timeout)
		a.timeout, b.timeout = 0, 0
		return a == b && d >= -1 && d <= 1
	})
	check := func(t *testing.T, step string) {
		t.Helper()
		shown := ipsetSaved(t, s)
		cs := &s.fw.sets
		for _, r := range []struct {
			name string
			s    *clientSet
		}{{AuthSet, &cs.auth}, {AcctSet, &cs.acct}, {DownSet, &cs.dl}} {
			if err := s.fw.readClientSet(t.Context(), r.name, r.s); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(appendEntries(nil, shown[r.name]), r.s.elems, approx, cmp.AllowUnexported(clientElem{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("%s: %s read through netlink differs from ipset's (-ipset +netlink):\n%s", step, r.name, diff)
			}
			for _, c := range s.Clients {
				e, ok := r.s.get(be32(c.IP))
				var want *entry
				for i := range shown[r.name] {
					if shown[r.name][i].Key == c.IP.String() {
						want = &shown[r.name][i]
					}
				}
				if ok != (want != nil) || ok && e.bytes != want.Bytes {
					t.Errorf("%s: %s index for %s = %+v, %v; ipset shows %+v", step, r.name, c.IP, e, ok, want)
				}
			}
		}
		usage, err := s.fw.Usage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		want := map[netip.Addr]Usage{}
		dl := indexByIP(shown[DownSet])
		for ip, a := range indexByIP(shown[AcctSet]) {
			want[ip] = usageOf(a, dl[ip])
		}
		if diff := cmp.Diff(want, usage); diff != "" {
			t.Errorf("%s: Usage differs from ipset's figures (-ipset +Usage):\n%s", step, diff)
		}
	}
	check(t, "two clients")
	if u, _ := s.fw.Usage(t.Context()); u[s.Clients[0].IP].Bytes <= 90_000 || u[s.Clients[0].IP].DownBytes <= 60_000 {
		t.Errorf("client1's usage %+v, want the grant's counters plus its traffic", u[s.Clients[0].IP])
	}
	c1 := s.Clients[0].IP.String()
	for _, step := range []struct {
		name string
		argv []string
	}{
		{"client1's counters deleted", []string{"ipset", "del", AcctSet, c1}},
		{"client1's MAC changed", []string{"ipset", "add", "-exist", AuthSet, c1 + ",02:00:00:00:00:99"}},
		{"cw-dl flushed", []string{"ipset", "flush", DownSet}},
		{"cw-auth flushed", []string{"ipset", "flush", AuthSet}},
	} {
		mustRun(t, s.Gateway, step.argv...)
		check(t, step.name)
	}
	if u, _ := s.fw.Usage(t.Context()); len(u) != 1 || u[s.Clients[1].IP] != (Usage{}) {
		t.Errorf("Usage after the damage = %+v, want client2's zero counters only", u)
	}
}

// Reconcile compares set headers read with `ipset list -t`: on this
// kernel and ipset they say what the create lines of `ipset save` say.
func TestKernelTerseHeadersMatchSave(t *testing.T) {
	s := newSite(t)
	s.setup(t)
	terse, err := s.Gateway.Run(t.Context(), "ipset", "list", "-t")
	if err != nil {
		t.Fatal(err)
	}
	save, err := s.Gateway.Run(t.Context(), "ipset", "save")
	if err != nil {
		t.Fatal(err)
	}
	got, want := parseTerse(terse), parseHeaders(save)
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(header{})); diff != "" {
		t.Errorf("ipset list -t (-save +terse):\n%s", diff)
	}
	for _, spec := range s.fw.cfg.sets() {
		if h, ok := got[spec.name]; !ok || !h.equal(parseHeader(spec.args)) {
			t.Errorf("%s: header %v (present %v), want what Setup created: %v", spec.name, h, ok, parseHeader(spec.args))
		}
	}
	if strings.Contains(terse, "add ") {
		t.Errorf("ipset list -t lists elements:\n%s", terse)
	}
}
