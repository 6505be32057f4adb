package gateway

import (
	"fmt"
	"time"
)

// Schedule is when the site is open (the policy's opening hours), and the
// town's time zone, in which days, and so daily quotas, are counted.
type Schedule struct {
	Loc    *time.Location
	Always bool      // open at every hour (Days unused)
	Days   [7][]Span // by time.Weekday
}

// Span is one opening period of a day, in minutes since midnight; To may be
// 24*60.
type Span struct{ From, To int }

// OpenAt reports whether the site is open at t. A nil Schedule is always
// open.
func (s *Schedule) OpenAt(t time.Time) bool {
	if s == nil || s.Always {
		return true
	}
	lt := t.In(s.loc())
	m := lt.Hour()*60 + lt.Minute()
	for _, sp := range s.Days[lt.Weekday()] {
		if m >= sp.From && m < sp.To {
			return true
		}
	}
	return false
}

// NextOpen is the next time at or after t the site opens (zero if never).
func (s *Schedule) NextOpen(t time.Time) time.Time {
	if s.OpenAt(t) {
		return t
	}
	lt := t.In(s.loc())
	day := time.Date(lt.Year(), lt.Month(), lt.Day(), 0, 0, 0, 0, s.loc())
	for d := range 8 {
		date := day.AddDate(0, 0, d)
		for _, sp := range s.Days[date.Weekday()] {
			// Wall-clock, not midnight plus minutes: days the clocks
			// change are 23 or 25 hours long.
			at := time.Date(date.Year(), date.Month(), date.Day(), sp.From/60, sp.From%60, 0, 0, s.loc())
			if !at.Before(t) {
				return at
			}
		}
	}
	return time.Time{}
}

// dayStart is the local midnight that starts t's day.
func (s *Schedule) dayStart(t time.Time) time.Time {
	lt := t.In(s.loc())
	return time.Date(lt.Year(), lt.Month(), lt.Day(), 0, 0, 0, 0, s.loc())
}

func (s *Schedule) loc() *time.Location {
	if s == nil || s.Loc == nil {
		return time.Local
	}
	return s.Loc
}

// String renders the schedule for logs.
func (s *Schedule) String() string {
	if s == nil || s.Always {
		return "always open"
	}
	out := ""
	for d := time.Sunday; d <= time.Saturday; d++ {
		for _, sp := range s.Days[d] {
			out += fmt.Sprintf("%s %02d:%02d-%02d:%02d ", d.String()[:3], sp.From/60, sp.From%60, sp.To/60, sp.To%60)
		}
	}
	return out + s.loc().String()
}

// SetSchedule sets the opening hours and the town's time zone. Outside the
// hours no device may log in (an operator's `ctl allow` still may) and the
// sessions of residents end at closing time.
func (g *Gateway) SetSchedule(s *Schedule) {
	// Days may now start at another hour: count today's ended sessions
	// again in the new time zone.
	ended, err := g.o.Store.Ended()
	if err != nil {
		g.log.Warn("reading ended sessions for the daily allowances", "err", err)
	}
	g.mu.Lock()
	g.schedule = s
	g.day, g.daily = s.dayStart(g.now()), map[string]uint64{}
	for _, e := range ended {
		g.countDay(e)
	}
	g.mu.Unlock()
	g.log.Info("opening hours applied", "hours", s.String())
}

// closed reports whether the site is closed now. Caller holds mu.
func (g *Gateway) closed(now time.Time) bool { return !g.schedule.OpenAt(now) }

// usedToday is what the device used in sessions that ended since the
// start of the local day (daily quotas). Caller holds mu.
func (g *Gateway) usedToday(mac string, now time.Time) uint64 {
	if day := g.schedule.dayStart(now); !day.Equal(g.day) {
		g.day, g.daily = day, map[string]uint64{}
	}
	return g.daily[mac]
}

// countDay adds an ended session's bytes to its device's day. Caller holds mu.
func (g *Gateway) countDay(s *Session) {
	if s.Ended.IsZero() {
		return
	}
	if day := g.schedule.dayStart(s.Ended); !day.Equal(g.day) {
		if day.Before(g.day) {
			return // a session of an earlier day
		}
		g.day, g.daily = day, map[string]uint64{}
	}
	g.daily[s.MAC.String()] += s.BytesDown + s.BytesUp
}
