package shaper

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Hooks for the tier-2 tests (package shaper_test).

// CapturedCommands and FixtureFile name the fixtures TestKernelCapture writes.
var (
	CapturedCommands = capturedCommands
	FixtureFile      = fixtureFile
)

// UseNetlink switches between netlink (the default of New) and the tc
// command, so a test can compare the two.
func (t *TC) UseNetlink(on bool) {
	t.nlMu.Lock()
	defer t.nlMu.Unlock()
	t.useNL = on
}

// ObserveBothWays reads the kernel through the tc command and through
// netlink, and describes each reading: every object observe saw (rates
// aside: tc prints them rounded) and the plan it leads to for want.
func (t *TC) ObserveBothWays(ctx context.Context, want []Limit) (viaTC, viaNL string, err error) {
	m := map[netip.Addr]Limit{}
	for _, l := range want {
		m[l.IP] = l
	}
	for _, nl := range []bool{false, true} {
		t.UseNetlink(nl)
		s, err := t.observe(ctx)
		if err != nil {
			return "", "", err
		}
		p, err := t.plan(s, m, true)
		if err != nil {
			return "", "", err
		}
		d := describe(s) + "plan:\n" + strings.Join(lines(p.ops), "\n")
		if nl {
			viaNL = d
		} else {
			viaTC = d
		}
	}
	return viaTC, viaNL, nil
}

func describe(s state) string {
	var out []string
	out = append(out, fmt.Sprintf("ifb exists=%v up=%v ifb=%v", s.up.exists, s.ifbUp, s.ifbIsIFB))
	for i, d := range []devState{s.down, s.up} {
		dev := []string{"down", "up"}[i]
		out = append(out, fmt.Sprintf("%s root=%v %q ingress=%v redirect=%q", dev, d.rootOK, d.rootKind, d.ingressOK, d.redirect))
		for id, c := range d.classes {
			out = append(out, fmt.Sprintf("%s class %s root=%v", dev, classString(id), c.parentRoot))
		}
		for id, l := range d.leaves {
			out = append(out, fmt.Sprintf("%s leaf of %s: %s %x: limit %d default0=%v", dev, classString(id), l.kind, func() uint16 {
				if l.kind == "pfifo" {
					return 0 // the kernel's choice
				}
				return l.major
			}(), l.limit, l.defaultOK))
		}
		for major, b := range d.blocks {
			for htid, div := range b.tables {
				out = append(out, fmt.Sprintf("%s qdisc %x: table %x: divisor %d", dev, major, htid, div))
			}
			for h, n := range b.nodes {
				out = append(out, fmt.Sprintf("%s qdisc %x: node %s %+v", dev, major, handleString(h), n))
			}
			for _, pref := range b.otherPref {
				out = append(out, fmt.Sprintf("%s qdisc %x: other pref %d", dev, major, pref))
			}
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n") + "\n"
}
