package store

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"time"
	"unicode"
	"unicode/utf8"
)

// Helpers shared by the implementations, so that both accept and refuse
// exactly the same input.

// MaxIDLen is the longest id (gateway, site, command) and MaxTokenLen
// the longest event id, session id, user id or method.
const (
	MaxIDLen    = 128
	MaxTokenLen = 200
)

// CheckToken checks an event id, session id, user id or method: 1 to
// MaxTokenLen bytes of UTF-8 without control characters. Unlike site and
// gateway ids these never sit in the middle of a Redis key, so ':' is fine.
func CheckToken(what, s string) error {
	if s == "" || len(s) > MaxTokenLen {
		return fmt.Errorf("%w: %s %.20q... is empty or longer than %d bytes", ErrInvalid, what, s, MaxTokenLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s %q is not UTF-8", ErrInvalid, what, s)
	}
	for i, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: %s %q has a control character at byte %d", ErrInvalid, what, s, i)
		}
	}
	return nil
}

// CheckID checks an id: 1 to MaxIDLen bytes of letters, digits and . _ - @ + =
// (no ':' or spaces, which the implementations use as separators).
func CheckID(what, id string) error {
	if id == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("%w: %s %.20q... is longer than %d bytes", ErrInvalid, what, id, MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == '-', c == '@', c == '+', c == '=':
		default:
			return fmt.Errorf("%w: %s %q has %q at byte %d (allowed: letters, digits, . _ - @ + =)", ErrInvalid, what, id, c, i)
		}
	}
	return nil
}

// NormalizeMAC returns mac as lower-case colon-separated EUI-48.
func NormalizeMAC(what, mac string) (string, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("%w: %s %q is not a MAC address (try aa:bb:cc:dd:ee:ff)", ErrInvalid, what, mac)
	}
	return hw.String(), nil
}

// Millis truncates t to milliseconds in UTC, the precision the store keeps.
func Millis(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.UnixMilli(t.UnixMilli()).UTC()
}

// FromMillis is the inverse of t.UnixMilli for stored times; 0 is the zero
// time.
func FromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// NewID returns a random 128-bit id in hex.
func NewID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b[:])
}

// CheckEvent validates ev and returns it normalised (MAC, millisecond UTC
// times, Start defaulted to At).
func CheckEvent(ev SessionEvent) (SessionEvent, error) {
	if err := CheckToken("event id", ev.ID); err != nil {
		return ev, err
	}
	wrap := func(err error) error { return fmt.Errorf("session event %q: %w", ev.ID, err) }
	switch ev.Kind {
	case EventStart, EventInterim, EventStop:
	default:
		return ev, wrap(fmt.Errorf("%w: kind %q is not start, interim or stop", ErrInvalid, ev.Kind))
	}
	for _, f := range []struct{ what, id string }{{"gateway id", ev.GatewayID}, {"site id", ev.SiteID}} {
		if err := CheckID(f.what, f.id); err != nil {
			return ev, wrap(err)
		}
	}
	if err := CheckToken("session id", ev.SessionID); err != nil {
		return ev, wrap(err)
	}
	if ev.UserID != "" {
		if err := CheckToken("user id", ev.UserID); err != nil {
			return ev, wrap(err)
		}
	}
	if ev.Method != "" {
		if err := CheckToken("method", ev.Method); err != nil {
			return ev, wrap(err)
		}
	}
	mac, err := NormalizeMAC("client mac", ev.ClientMAC)
	if err != nil {
		return ev, wrap(err)
	}
	ev.ClientMAC = mac
	if ev.At.IsZero() || ev.At.Unix() <= 0 {
		return ev, wrap(fmt.Errorf("%w: time %v is not set", ErrInvalid, ev.At))
	}
	ev.At = Millis(ev.At)
	if ev.Start.IsZero() {
		ev.Start = ev.At
	}
	ev.Start = Millis(ev.Start)
	if ev.Start.After(ev.At) {
		return ev, wrap(fmt.Errorf("%w: start %v is after the event's time %v", ErrInvalid, ev.Start, ev.At))
	}
	if ev.BytesDown > 1<<53 || ev.BytesUp > 1<<53 {
		return ev, wrap(fmt.Errorf("%w: byte counts above 2^53", ErrInvalid))
	}
	if len(ev.Reason) > MaxFieldLen {
		return ev, wrap(fmt.Errorf("%w: reason is longer than %d bytes", ErrInvalid, MaxFieldLen))
	}
	return ev, nil
}

// Delta is what applying one event changed, for totals and rollups.
type Delta struct {
	NewSession bool // count a session (in the start hour, for the method)
	BytesDown  uint64
	BytesUp    uint64
	OnlineMS   int64 // time since the previous event, counted in the event's hour
}

// Apply applies the validated event ev to s (nil: the session is new) and
// returns the updated session and what changed. It is the reference for
// redisstore's Lua script.
func Apply(s *Session, ev SessionEvent) (Session, Delta) {
	var d Delta
	var n Session
	if s == nil {
		d.NewSession = true
		n = Session{
			ID: ev.SessionID, GatewayID: ev.GatewayID, SiteID: ev.SiteID, ClientMAC: ev.ClientMAC,
			UserID: ev.UserID, Method: ev.Method, Start: ev.Start, LastSeen: ev.Start,
		}
	} else {
		n = *s
	}
	if ev.BytesDown > n.BytesDown {
		d.BytesDown = ev.BytesDown - n.BytesDown
		n.BytesDown = ev.BytesDown
	}
	if ev.BytesUp > n.BytesUp {
		d.BytesUp = ev.BytesUp - n.BytesUp
		n.BytesUp = ev.BytesUp
	}
	if ev.At.After(n.LastSeen) && n.Open() {
		d.OnlineMS = ev.At.Sub(n.LastSeen).Milliseconds()
		n.LastSeen = ev.At
	}
	if ev.Kind == EventStop && n.Open() {
		n.End = ev.At
		if n.LastSeen.After(n.End) { // an interim was later than the stop
			n.End = n.LastSeen
		}
		n.StopReason = ev.Reason
	}
	return n, d
}

// CheckTTL checks an ephemeral key and TTL.
func CheckTTL(key string, ttl time.Duration) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if ttl < time.Millisecond {
		return fmt.Errorf("%w: key %q: ttl %v is under 1ms", ErrInvalid, key, ttl)
	}
	return nil
}

// CheckKey checks an ephemeral key: 1 to 256 bytes.
func CheckKey(key string) error {
	if key == "" || len(key) > 256 {
		return fmt.Errorf("%w: ephemeral key %.40q is empty or longer than 256 bytes", ErrInvalid, key)
	}
	return nil
}

// CheckCommand validates c and returns it normalised, with an ID and a
// creation time (now) when they are missing.
func CheckCommand(c Command, now time.Time) (Command, error) {
	if c.ID == "" {
		c.ID = NewID()
	}
	if err := CheckID("command id", c.ID); err != nil {
		return c, err
	}
	if err := CheckID("gateway id", c.GatewayID); err != nil {
		return c, fmt.Errorf("command %s: %w", c.ID, err)
	}
	switch c.Kind {
	case CommandKick, CommandExtend:
	default:
		return c, fmt.Errorf("command %s: %w: kind %q is not kick or extend", c.ID, ErrInvalid, c.Kind)
	}
	mac, err := NormalizeMAC("client mac", c.ClientMAC)
	if err != nil {
		return c, fmt.Errorf("command %s: %w", c.ID, err)
	}
	c.ClientMAC = mac
	if c.Kind == CommandExtend && c.Extend <= 0 {
		return c, fmt.Errorf("command %s: %w: extend %v is not positive", c.ID, ErrInvalid, c.Extend)
	}
	if c.Kind == CommandKick && c.Extend != 0 {
		return c, fmt.Errorf("command %s: %w: a kick has no extend", c.ID, ErrInvalid)
	}
	if c.Created.IsZero() {
		c.Created = now
	}
	c.Created = Millis(c.Created)
	return c, nil
}

// HourOf returns the start of t's UTC hour.
func HourOf(t time.Time) time.Time { return t.UTC().Truncate(time.Hour) }

// DayStart returns the start of t's calendar day in loc.
func DayStart(t time.Time, loc *time.Location) time.Time {
	y, m, d := t.In(loc).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, loc)
}

// Days returns the starts of the days in loc from from's day to to's day,
// inclusive (at most max of them; DST days are 23 or 25 hours long).
func Days(from, to time.Time, loc *time.Location, max int) []time.Time {
	var out []time.Time
	last := DayStart(to, loc)
	for d := DayStart(from, loc); !d.After(last) && len(out) < max; d = d.AddDate(0, 0, 1) {
		out = append(out, d)
	}
	return out
}

// DayOf returns t's day in loc as YYYYMMDD.
func DayOf(t time.Time, loc *time.Location) string { return t.In(loc).Format("20060102") }

// MaxDays bounds a DistinctUsers or Daily query (ten years).
const MaxDays = 3660

// Limits on what gateways and APs report, so a broken or hostile client
// cannot bloat the store.
const (
	MaxExtra    = 32  // entries in GatewayHealth.Extra
	MaxRadios   = 8   // radios in APState
	MaxFieldLen = 256 // bytes in any reported string
)

// CheckHeartbeat validates a heartbeat.
func CheckHeartbeat(id string, at time.Time, h GatewayHealth) error {
	if err := CheckID("gateway id", id); err != nil {
		return err
	}
	wrap := func(format string, a ...any) error {
		return fmt.Errorf("%w: heartbeat of %s: %s", ErrInvalid, id, fmt.Sprintf(format, a...))
	}
	if at.Unix() <= 0 {
		return wrap("time %v is not set", at)
	}
	if len(h.Extra) > MaxExtra {
		return wrap("%d extra entries, at most %d", len(h.Extra), MaxExtra)
	}
	if len(h.Version) > MaxFieldLen {
		return wrap("version is longer than %d bytes", MaxFieldLen)
	}
	for k, v := range h.Extra {
		if len(k) > MaxFieldLen || len(v) > MaxFieldLen {
			return wrap("extra %.20q is longer than %d bytes", k, MaxFieldLen)
		}
	}
	return nil
}

// CheckAPState validates an AP check-in (after NormalizeMAC).
func CheckAPState(mac string, at time.Time, st APState, configVersion string) error {
	wrap := func(format string, a ...any) error {
		return fmt.Errorf("%w: check-in of %s: %s", ErrInvalid, mac, fmt.Sprintf(format, a...))
	}
	if at.Unix() <= 0 {
		return wrap("time %v is not set", at)
	}
	if len(st.Radios) > MaxRadios {
		return wrap("%d radios, at most %d", len(st.Radios), MaxRadios)
	}
	if len(st.Firmware) > MaxFieldLen || len(configVersion) > MaxFieldLen {
		return wrap("firmware or config version longer than %d bytes", MaxFieldLen)
	}
	for i, r := range st.Radios {
		if len(r.Name) > MaxFieldLen || len(r.SSID) > MaxFieldLen {
			return wrap("radio %d: name or SSID longer than %d bytes", i, MaxFieldLen)
		}
	}
	return nil
}
