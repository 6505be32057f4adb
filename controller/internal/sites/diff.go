package sites

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Action is what a change does.
type Action string

// The actions, written as terraform plan writes them.
const (
	Add    Action = "+"
	Remove Action = "-"
	Update Action = "~"
)

// Change is one thing a new configuration adds, removes or changes.
type Change struct {
	Action Action
	Kind   string // "town", "policy", "site", "gateway" or "access_point"
	ID     string // the policy's name, the site's or gateway's id, the AP's MAC; "" for the town
	Site   string // the site of a gateway or access point
	// Fields are the changed fields (Update), or every field of an added
	// thing (Add: Old is ""); none for Remove.
	Fields []FieldChange
}

// FieldChange is one field's old and new value, as the file would write it.
type FieldChange struct {
	Field    string
	Old, New string
}

type field struct{ key, val string }

// Diff returns what changes from old to new: the town, then policies,
// sites, gateways and access points, each ordered by id. A site's
// "effective.*" fields show the limits its gateways will enforce, so a
// change to a policy also shows on every site that follows it. A nil old
// is an empty configuration.
func Diff(old, new *Config) []Change {
	if old == nil {
		old = &Config{}
	}
	if new == nil {
		new = &Config{}
	}
	var out []Change
	town := func(c *Config) map[string]item {
		if c.Town.Name == "" {
			return nil // an empty Config
		}
		fs := townFields(c.Town)
		return map[string]item{"": {fields: fs, summary: fs}}
	}
	out = append(out, diffSet("town", town(old), town(new))...)
	out = append(out, diffSet("policy", index(old.Policies, policyItem), index(new.Policies, policyItem))...)
	out = append(out, diffSet("site", index(old.Sites, siteItem), index(new.Sites, siteItem))...)
	out = append(out, diffSet("gateway", gateways(old), gateways(new))...)
	out = append(out, diffSet("access_point", accessPoints(old), accessPoints(new))...)
	return out
}

type item struct {
	id, site string
	fields   []field
	summary  []field // the fields shown for an added item
}

func index[T any](xs []T, f func(T) item) map[string]item {
	m := map[string]item{}
	for _, x := range xs {
		it := f(x)
		m[it.id] = it
	}
	return m
}

func diffSet(kind string, old, new map[string]item) []Change {
	ids := make([]string, 0, len(old)+len(new))
	for id := range old {
		ids = append(ids, id)
	}
	for id := range new {
		if _, ok := old[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var out []Change
	for _, id := range ids {
		o, inOld := old[id]
		n, inNew := new[id]
		switch {
		case !inNew:
			out = append(out, Change{Action: Remove, Kind: kind, ID: id, Site: o.site})
		case !inOld:
			c := Change{Action: Add, Kind: kind, ID: id, Site: n.site}
			for _, f := range n.summary {
				c.Fields = append(c.Fields, FieldChange{Field: f.key, New: f.val})
			}
			out = append(out, c)
		default:
			if fs := changed(o.fields, n.fields); len(fs) > 0 {
				out = append(out, Change{Action: Update, Kind: kind, ID: id, Site: n.site, Fields: fs})
			}
		}
	}
	return out
}

// changed compares two field lists written by the same function.
func changed(old, new []field) []FieldChange {
	ov := map[string]string{}
	for _, f := range old {
		ov[f.key] = f.val
	}
	var out []FieldChange
	for _, f := range new {
		if o := ov[f.key]; o != f.val {
			out = append(out, FieldChange{Field: f.key, Old: o, New: f.val})
		}
	}
	return out
}

func townFields(t Town) []field {
	tz := ""
	if t.Timezone != nil {
		tz = t.Timezone.String()
	}
	fs := []field{
		{"name", q(t.Name)}, {"ipa_code", q(t.IPACode)}, {"logo", q(t.Logo)}, {"ssid", q(t.SSID)}, {"timezone", tz}, {"retention_days", strconv.Itoa(t.RetentionDays)},
		{"contacts.email", q(t.Contacts.Email)}, {"contacts.phone", q(t.Contacts.Phone)}, {"contacts.dpo", q(t.Contacts.DPO)},
	}
	for _, tx := range []struct {
		key string
		t   Text
	}{{"privacy", t.Privacy}, {"terms", t.Terms}} {
		fs = append(fs, field{tx.key + ".url", q(tx.t.URL)},
			field{tx.key + ".it", long(tx.t.IT)}, field{tx.key + ".en", long(tx.t.EN)},
			field{tx.key + ".de", long(tx.t.DE)}, field{tx.key + ".fr", long(tx.t.FR)})
	}
	return fs
}

func policyFields(p Policy, prefix string) []field {
	fs := []field{
		{"down", p.Down.String()}, {"up", p.Up.String()}, {"session", dur(p.Session)}, {"idle", dur(p.Idle)},
		{"daily_quota", p.DailyQuota.String()}, {"max_clients", fmt.Sprint(p.MaxClients)},
		{"login.methods", list(p.Login.Methods)}, {"login.sms.countries", list(p.Login.SMS.Countries)},
		{"login.spid.level", fmt.Sprint(p.Login.SPID.Level)}, {"login.voucher.devices", fmt.Sprint(p.Login.Voucher.Devices)},
		{"remember_device_days", fmt.Sprint(p.RememberDeviceDays)}, {"hours", p.Hours.String()},
		{"walled_garden", list(p.WalledGarden)},
	}
	for i := range fs {
		fs[i].key = prefix + fs[i].key
	}
	return fs
}

func policyItem(p Policy) item {
	fs := append([]field{{"description", q(p.Description)}}, policyFields(p, "")...)
	return item{id: p.Name, fields: fs, summary: fs}
}

func siteItem(s Site) item {
	head := []field{
		{"name", q(s.Name)}, {"kind", string(s.Kind)}, {"address", q(s.Address)}, {"coordinates", s.Coordinates.String()},
		{"policy", q(s.PolicyName)}, {"ssid", q(s.SSID)}, {"client_network", s.ClientNetwork.String()},
	}
	return item{id: s.ID, fields: append(slices.Clip(head), policyFields(s.Policy, "effective.")...), summary: head}
}

func gateways(c *Config) map[string]item {
	m := map[string]item{}
	for _, s := range c.Sites {
		for _, g := range s.Gateways {
			fs := []field{{"site", q(s.ID)}, {"credential", g.Credential.String()}}
			m[g.ID] = item{id: g.ID, site: s.ID, fields: fs, summary: fs}
		}
	}
	return m
}

func accessPoints(c *Config) map[string]item {
	m := map[string]item{}
	for _, s := range c.Sites {
		for _, a := range s.AccessPoints {
			var radios []string
			for _, r := range a.Radios {
				radios = append(radios, r.String())
			}
			fs := []field{{"site", q(s.ID)}, {"model", q(a.Model)}, {"location", q(a.Location)}, {"radios", list(radios)}}
			m[a.MAC] = item{id: a.MAC, site: s.ID, fields: fs, summary: fs}
		}
	}
	return m
}

func (r Radio) String() string {
	ch, p := "auto", "default"
	if r.Channel != 0 {
		ch = fmt.Sprint(r.Channel)
	}
	if r.TxPower != 0 {
		p = fmt.Sprintf("%ddBm", r.TxPower)
	}
	return fmt.Sprintf("%s channel %s power %s", r.Band, ch, p)
}

func q(s string) string { return fmt.Sprintf("%q", s) }

// long writes a text briefly, with a fingerprint so that two texts that
// differ after the shown part still read differently.
func long(s string) string {
	if len(s) <= 48 {
		return q(s)
	}
	h := fnv.New32a()
	h.Write([]byte(s))
	short := []rune(s)[:40]
	return fmt.Sprintf("%q (%d bytes, fnv %08x)", string(short)+"…", len(s), h.Sum32())
}

func list[T ~string](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = string(x)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// dur writes a duration as the file would: 2h, 1h30m, 15m, 0.
func dur(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// RenderPlan writes changes the way terraform plan does.
func RenderPlan(changes []Change) string {
	if len(changes) == 0 {
		return "No changes.\n"
	}
	var b strings.Builder
	counts := map[Action]int{}
	for _, c := range changes {
		counts[c.Action]++
		name := c.Kind
		if c.ID != "" {
			name += fmt.Sprintf(" %q", c.ID)
		}
		if c.Site != "" && c.Kind != "site" {
			name += fmt.Sprintf(" (site %s)", c.Site)
		}
		fmt.Fprintf(&b, "  %s %s\n", c.Action, name)
		width := 0
		for _, f := range c.Fields {
			width = max(width, len(f.Field))
		}
		for _, f := range c.Fields {
			if c.Action == Add {
				fmt.Fprintf(&b, "      + %-*s = %s\n", width, f.Field, f.New)
			} else {
				fmt.Fprintf(&b, "      ~ %-*s = %s -> %s\n", width, f.Field, f.Old, f.New)
			}
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "Plan: %d to add, %d to change, %d to remove.\n", counts[Add], counts[Update], counts[Remove])
	return b.String()
}
