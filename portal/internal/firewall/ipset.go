package firewall

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
)

// maxTimeout is the largest element timeout ipset accepts, in seconds.
const maxTimeout = 2147483

// setSpec is how one of our sets is created.
type setSpec struct {
	name string
	args []string // after "create <name>"
}

// gardenTimeout is the default timeout (seconds) of the dynamic walled
// garden: dnsmasq adds an address on every lookup of a garden name (which
// renews it), so an address the name no longer resolves to goes away.
const gardenTimeout = 3600

// The sets, in creation order. cw-auth, cw-acct and cw-dl all take the
// session's timeout per element, so a session the kernel ends stops in both
// directions and stops being counted.
func (cfg Config) sets() []setSpec {
	r := cfg.Subnet.Masked().String()
	return []setSpec{
		{AuthSet, []string{"bitmap:ip,mac", "range", r, "timeout", "0"}},
		{AcctSet, []string{"bitmap:ip", "range", r, "timeout", "0", "counters", "comment"}},
		{DownSet, []string{"bitmap:ip", "range", r, "timeout", "0", "counters"}},
		{GardenNetSet, []string{"hash:net"}},
		{GardenSet, []string{"hash:net", "timeout", strconv.Itoa(gardenTimeout)}},
	}
}

// tmpName is the name a set is re-created under before it is swapped in.
func (s setSpec) tmpName() string { return s.name + "-new" }

// header is the part of a set's create line that matters to us: its type
// and the options we set (range, timeout, counters, comment). Sizes, hash
// seeds and the like are left out.
type header struct {
	typ  string
	opts map[string]string // "range" -> "10.20.0.0-10.20.3.255", "counters" -> ""
}

// parseHeaders reads `ipset list -t -o save`: one create line per set.
func parseHeaders(out string) map[string]header {
	hs := map[string]header{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || f[0] != "create" {
			continue
		}
		hs[f[1]] = parseHeader(f[2:])
	}
	return hs
}

// parseTerse reads `ipset list -t`: per set, "Name: x", "Type: y" and
// "Header: <create options>" lines (among others), which say what the
// create line of `ipset save` says.
func parseTerse(out string) map[string]header {
	hs := map[string]header{}
	var name, typ string
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Name":
			name, typ = v, ""
		case "Type":
			typ = v
		case "Header":
			if name != "" && typ != "" {
				hs[name] = parseHeader(append([]string{typ}, strings.Fields(v)...))
			}
		}
	}
	return hs
}

// parseHeader parses a set type and its create options.
func parseHeader(f []string) header {
	h := header{typ: f[0], opts: map[string]string{}}
	for i := 1; i < len(f); i++ {
		switch f[i] {
		case "counters", "comment", "skbinfo", "forceadd":
			h.opts[f[i]] = ""
		case "range", "timeout":
			if i+1 < len(f) {
				v := f[i+1]
				if f[i] == "range" {
					v = rangeOf(v)
				}
				h.opts[f[i]] = v
				i++
			}
		default: // family, hashsize, maxelem, bucketsize, initval, size, ...: a value follows
			i++
		}
	}
	return h
}

// rangeOf turns a prefix into the "first-last" form ipset prints.
func rangeOf(v string) string {
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return v
	}
	p = p.Masked()
	a := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	n |= host
	last := netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	return p.Addr().String() + "-" + last.String()
}

func (h header) equal(o header) bool {
	if h.typ != o.typ || len(h.opts) != len(o.opts) {
		return false
	}
	for k, v := range h.opts {
		if w, ok := o.opts[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func (h header) String() string {
	keys := make([]string, 0, len(h.opts))
	for k := range h.opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := h.typ
	for _, k := range keys {
		s += " " + k
		if h.opts[k] != "" {
			s += " " + h.opts[k]
		}
	}
	return s
}

// copyLine renders e as an add line for set name with header h, keeping
// the options h supports (timeout left, counters, comment). A timeout of 0
// is left out, so the set's default applies.
func copyLine(name string, h header, e entry) string {
	s := "add " + name + " " + e.Key
	if e.MAC != "" {
		s += "," + e.MAC
	}
	if _, ok := h.opts["timeout"]; ok && e.Timeout > 0 {
		s += fmt.Sprintf(" timeout %d", e.Timeout)
	}
	if _, ok := h.opts["counters"]; ok && e.HasCounters {
		s += fmt.Sprintf(" packets %d bytes %d", e.Packets, e.Bytes)
	}
	if _, ok := h.opts["comment"]; ok && e.Comment != "" {
		s += fmt.Sprintf(" comment %q", e.Comment)
	}
	return s
}

// entry is one element of a set as `ipset list -o save` prints it.
type entry struct {
	Key     string // "10.20.0.11", or "10.20.0.0/24" in hash:net
	MAC     string // bitmap:ip,mac only, lower case
	Timeout int64  // seconds left; 0: none
	Packets uint64
	Bytes   uint64
	Comment string
	// has* say whether the option was present at all.
	HasCounters bool
}

// parseSave parses the output of `ipset list <set> -o save` (or of
// `ipset save`) into the elements of each set.
func parseSave(out string) (map[string][]entry, error) {
	sets := map[string][]entry{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		f, err := splitQuoted(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		switch f[0] {
		case "create":
			if len(f) < 2 {
				return nil, fmt.Errorf("line %d: create without a set name", n)
			}
			if _, ok := sets[f[1]]; !ok {
				sets[f[1]] = nil
			}
		case "add":
			if len(f) < 3 {
				return nil, fmt.Errorf("line %d: add without set and element", n)
			}
			e, err := parseEntry(f[2], f[3:])
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			sets[f[1]] = append(sets[f[1]], e)
		default:
			return nil, fmt.Errorf("line %d: unexpected %q", n, f[0])
		}
	}
	return sets, sc.Err()
}

func parseEntry(elem string, opts []string) (entry, error) {
	e := entry{Key: elem}
	if ip, mac, ok := strings.Cut(elem, ","); ok {
		hw, err := net.ParseMAC(mac)
		if err != nil {
			return entry{}, fmt.Errorf("element %q: %w", elem, err)
		}
		e.Key, e.MAC = ip, hw.String()
	}
	for i := 0; i < len(opts); i++ {
		name := opts[i]
		if i+1 >= len(opts) {
			return entry{}, fmt.Errorf("element %q: option %q without a value", elem, name)
		}
		val := opts[i+1]
		i++
		var err error
		switch name {
		case "timeout":
			e.Timeout, err = strconv.ParseInt(val, 10, 64)
		case "packets":
			e.Packets, err = strconv.ParseUint(val, 10, 64)
			e.HasCounters = true
		case "bytes":
			e.Bytes, err = strconv.ParseUint(val, 10, 64)
			e.HasCounters = true
		case "comment":
			e.Comment = val
		default: // skbmark, skbprio, ...: not ours, keep going
		}
		if err != nil {
			return entry{}, fmt.Errorf("element %q: %s %q: %w", elem, name, val, err)
		}
	}
	return e, nil
}

// splitQuoted splits a save line on blanks, keeping "quoted strings" (ipset
// quotes comments) whole and unquoted.
func splitQuoted(line string) ([]string, error) {
	var out []string
	for {
		line = strings.TrimLeft(line, " \t")
		if line == "" {
			break
		}
		if line[0] == '"' {
			end := strings.IndexByte(line[1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("unterminated quote in %q", line)
			}
			out = append(out, line[1:end+1])
			line = line[end+2:]
			continue
		}
		end := strings.IndexAny(line, " \t")
		if end < 0 {
			end = len(line)
		}
		out = append(out, line[:end])
		line = line[end:]
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty line")
	}
	return out, nil
}

// quotaComment encodes a client's quota in its cw-acct element, so Usage can
// subtract the counter offset without any state in the daemon.
func quotaComment(quota uint64) string { return "q=" + strconv.FormatUint(quota, 10) }

// parseQuotaComment is the inverse of quotaComment; a missing or foreign
// comment means unlimited. It reads the comment as ipset prints it or, in
// place, as a netlink listing carries it (quotaOfComment).
func parseQuotaComment[T string | []byte](c T) uint64 {
	if len(c) < 3 || c[0] != 'q' || c[1] != '=' {
		return 0
	}
	var q uint64
	for i := 2; i < len(c); i++ {
		d := c[i]
		if d < '0' || d > '9' || q > (QuotaBase-uint64(d-'0'))/10 {
			return 0 // not a number, or above QuotaBase
		}
		q = q*10 + uint64(d-'0')
	}
	return q
}

// acctOffset is the initial counter of a client with this quota and no use.
func acctOffset(quota uint64) uint64 {
	if quota == 0 {
		return 0
	}
	return QuotaBase - quota
}

// usageOf turns the cw-acct and cw-dl elements of one client into Usage.
func usageOf(acct entry, dl entry) Usage {
	return usage(acct.Bytes, acct.Packets, parseQuotaComment(acct.Comment), dl.Bytes)
}

// usage is usageOf of the figures: cw-acct's bytes, packets and quota,
// cw-dl's bytes.
func usage(acctBytes, acctPackets, quota, dlBytes uint64) Usage {
	off := acctOffset(quota)
	u := Usage{Packets: acctPackets, DownBytes: dlBytes}
	if acctBytes > off {
		u.Bytes = acctBytes - off
	}
	u.OverQuota = quota > 0 && acctBytes > QuotaBase
	return u
}

// timeoutFor is the element timeout (seconds) for a session ending at exp;
// 0 means none. ok is false when the session has already ended.
func timeoutFor(exp, now time.Time) (secs int64, ok bool) {
	if exp.IsZero() {
		return 0, true
	}
	d := exp.Sub(now)
	if d < time.Second {
		return 0, false
	}
	s := int64((d + time.Second - 1) / time.Second) // never end early
	if s > maxTimeout {
		s = maxTimeout
	}
	return s, true
}

// grantLines renders the ipset restore lines that (re)install one grant,
// in the order cw-acct, cw-dl, cw-auth: a client is authorised only once it
// is counted. acctBytes and dlBytes are the initial counters, or nil to keep
// the kernel's (an add without counters keeps them).
func grantLines(g Grant, timeout int64, acctBytes, dlBytes *uint64) []string {
	return []string{acctLine(g, timeout, acctBytes), dlLine(g, timeout, dlBytes), authLine(g, timeout)}
}

func acctLine(g Grant, timeout int64, bytes *uint64) string {
	s := fmt.Sprintf("add %s %s timeout %d", AcctSet, g.IP, timeout)
	if bytes != nil {
		s += fmt.Sprintf(" packets 0 bytes %d", *bytes)
	}
	return s + fmt.Sprintf(" comment %q", quotaComment(g.QuotaBytes))
}

func dlLine(g Grant, timeout int64, bytes *uint64) string {
	s := fmt.Sprintf("add %s %s timeout %d", DownSet, g.IP, timeout)
	if bytes != nil {
		s += fmt.Sprintf(" packets 0 bytes %d", *bytes)
	}
	return s
}

func authLine(g Grant, timeout int64) string {
	return fmt.Sprintf("add %s %s,%s timeout %d", AuthSet, g.IP, g.MAC, timeout)
}

// indexByIP maps the elements of a bitmap set by IP.
func indexByIP(es []entry) map[netip.Addr]entry {
	m := make(map[netip.Addr]entry, len(es))
	for _, e := range es {
		if ip, err := netip.ParseAddr(e.Key); err == nil {
			m[ip] = e
		}
	}
	return m
}

// grantElems is grantLines as netlink elements, in the same order.
func grantElems(g Grant, timeout int64, acctBytes, dlBytes *uint64) []setElem {
	t := uint32(timeout)
	return []setElem{
		{Set: AcctSet, IP: g.IP, Timeout: t, Bytes: acctBytes, Comment: quotaComment(g.QuotaBytes)},
		{Set: DownSet, IP: g.IP, Timeout: t, Bytes: dlBytes},
		{Set: AuthSet, IP: g.IP, MAC: g.MAC, Timeout: t},
	}
}
