package control

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/civicwifi/civicwifi/internal/quantity"
)

const timeLayout = "2006-01-02 15:04:05 MST"

func (c *cli) table() *tabwriter.Writer {
	return tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
}

// renderStatus prints "key: value" lines, values aligned.
func (c *cli) renderStatus(st Status) error {
	now := c.now()
	tw := c.table()
	line := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	line("version", orDash(st.Version))
	line("site", orDash(st.Site))
	started := c.when(st.Started)
	if !st.Started.IsZero() {
		started += " (up " + humanDuration(now.Sub(st.Started)) + ")"
	}
	line("started", started)
	line("client interface", orDash(st.ClientInterface))
	line("uplink interface", orDash(st.UplinkInterface))
	line("authorised", strconv.Itoa(st.Authorised))
	line("captive", strconv.Itoa(st.Captive))
	dns := "running"
	if !st.DNSRunning {
		dns = "NOT RUNNING"
	}
	line("dns", dns)
	line("repairs", strconv.FormatUint(st.Repairs, 10))
	last := c.when(st.LastReconcile)
	if !st.LastReconcile.IsZero() {
		last += " (" + humanDuration(now.Sub(st.LastReconcile)) + " ago)"
	}
	line("last reconcile", last)
	if cs := st.Controller; cs != nil {
		line("controller", cs.URL)
		line("policy version", orDash(cs.PolicyVersion))
		line("events queued", strconv.Itoa(cs.EventsQueued))
	}
	return tw.Flush()
}

// renderClients prints one row per device, sorted by IP then MAC.
func (c *cli) renderClients(cs []Client) error {
	now := c.now()
	cs = slices.Clone(cs)
	slices.SortFunc(cs, func(a, b Client) int {
		ia, _ := netip.ParseAddr(a.IP)
		ib, _ := netip.ParseAddr(b.IP)
		return cmp.Or(ia.Compare(ib), cmp.Compare(a.IP, b.IP), cmp.Compare(a.MAC, b.MAC))
	})
	tw := c.table()
	fmt.Fprintln(tw, "MAC\tIP\tHOSTNAME\tSTATE\tTIME LEFT\tDOWN\tUP\tTOTAL")
	authorised := 0
	for _, cl := range cs {
		left, down, up, total := "-", "-", "-", "-"
		if s := cl.Session; s != nil {
			left = timeLeft(s, now)
			down, up = humanBytes(s.BytesDown), humanBytes(s.BytesUp)
			total = humanBytes(s.BytesDown + s.BytesUp)
			if s.QuotaBytes > 0 {
				total += " / " + humanBytes(s.QuotaBytes)
			}
		}
		if cl.State == "authorised" {
			authorised++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			orDash(clean(cl.MAC, 17)), orDash(clean(cl.IP, 39)), orDash(clean(cl.Hostname, 24)), orDash(clean(cl.State, 12)),
			left, down, up, total)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(c.stdout, "%s: %d authorised, %d captive\n", plural(len(cs), "client"), authorised, len(cs)-authorised)
	return err
}

// renderSession prints the answer to allow or kick.
func (c *cli) renderSession(verb string, s Session) error {
	now := c.now()
	fmt.Fprintf(c.stdout, "%s %s\n", verb, target(clean(s.MAC, 17), clean(s.IP, 39)))
	tw := c.table()
	line := func(k, v string) { fmt.Fprintf(tw, "  %s:\t%s\n", k, v) }
	line("session", orDash(clean(s.ID, 64)))
	line("method", orDash(clean(s.Method, 32)))
	line("started", c.when(s.Started))
	if s.Ended.IsZero() {
		exp := "no time limit"
		if !s.Expires.IsZero() {
			exp = c.when(s.Expires) + " (" + timeLeft(&s, now) + " left)"
		}
		line("expires", exp)
	} else {
		line("ended", c.when(s.Ended)+" ("+orDash(clean(s.EndReason, 32))+")")
	}
	idle := "none"
	if s.IdleTimeout > 0 {
		idle = humanDuration(s.IdleTimeout)
	}
	line("idle timeout", idle)
	quota := "no limit"
	if s.QuotaBytes > 0 {
		quota = humanBytes(s.QuotaBytes)
	}
	line("quota", quota)
	line("down rate", rateOrNone(s.DownRate))
	line("up rate", rateOrNone(s.UpRate))
	line("used", fmt.Sprintf("%s down, %s up, %s", humanBytes(s.BytesDown), humanBytes(s.BytesUp), plural(int(s.Packets), "packet")))
	return tw.Flush()
}

func (c *cli) when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.In(c.loc).Format(timeLayout)
}

func timeLeft(s *Session, now time.Time) string {
	switch {
	case !s.Ended.IsZero():
		return "ended"
	case s.Expires.IsZero():
		return "no limit"
	case !s.Expires.After(now):
		return "expired"
	}
	return humanDuration(s.Expires.Sub(now))
}

// humanDuration prints "45s", "14m", "1h59m", "3d2h": two units at most.
func humanDuration(d time.Duration) string {
	if d < 0 {
		return "-" + humanDuration(-d)
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// humanBytes prints decimal (SI) sizes like the quantities in sites.yaml:
// "512 B", "1.5 kB", "12.3 MB", "2.0 GB".
func humanBytes(n uint64) string {
	if n < 1000 {
		return strconv.FormatUint(n, 10) + " B"
	}
	units := []string{"kB", "MB", "GB", "TB", "PB", "EB"}
	f := float64(n)
	i := -1
	for f >= 999.95 && i < len(units)-1 {
		f /= 1000
		i++
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

func rateOrNone(bps uint64) string {
	if bps == 0 {
		return "no limit"
	}
	return quantity.Rate(bps).String()
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// clean makes text from the network (DHCP hostnames are chosen by the
// device) safe for a terminal and a table: no control characters, escape
// sequences or tabs, and at most max runes.
func clean(s string, max int) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == max {
			return b.String() + "…"
		}
		if !unicode.IsPrint(r) || r == unicode.ReplacementChar {
			r = '?'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}
