package sites

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/internal/yamlconf"
)

// Hours are a policy's opening hours in the town's time zone: for each
// weekday (indexed by time.Weekday), the sorted, merged spans it is open.
// Zero Hours (no spans on any day) means always open.
type Hours struct {
	Days [7][]Span
}

// Span is a part of a day, in minutes from midnight: From < To <= 1440.
type Span struct {
	From, To int
}

// Always reports whether the hours impose no limit (no hours were given).
func (h Hours) Always() bool {
	for _, d := range h.Days {
		if len(d) > 0 {
			return false
		}
	}
	return true
}

// OpenAt reports whether the hotspot is open at t, in loc.
func (h Hours) OpenAt(t time.Time, loc *time.Location) bool {
	if h.Always() {
		return true
	}
	t = t.In(loc)
	m := t.Hour()*60 + t.Minute()
	for _, s := range h.Days[t.Weekday()] {
		if s.From <= m && m < s.To {
			return true
		}
	}
	return false
}

var dayNames = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// weekOrder is Monday first, as the file and String write weeks.
var weekOrder = []time.Weekday{time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday, time.Saturday, time.Sunday}

// String writes the hours in the file's notation, consecutive days with the
// same spans grouped: "mon-fri 08:00-20:00; sat 09:00-13:00". "always" for
// zero Hours.
func (h Hours) String() string {
	if h.Always() {
		return "always"
	}
	var parts []string
	for i := 0; i < 7; {
		d := weekOrder[i]
		j := i
		for j+1 < 7 && slices.Equal(h.Days[weekOrder[j+1]], h.Days[d]) {
			j++
		}
		if len(h.Days[d]) > 0 {
			days := dayNames[d]
			if j > i {
				days += "-" + dayNames[weekOrder[j]]
			}
			var spans []string
			for _, s := range h.Days[d] {
				spans = append(spans, clock(s.From)+"-"+clock(s.To))
			}
			parts = append(parts, days+" "+strings.Join(spans, ","))
		}
		i = j + 1
	}
	return strings.Join(parts, "; ")
}

func clock(m int) string { return fmt.Sprintf("%02d:%02d", m/60, m%60) }

const hoursHint = `(write days and times, e.g. "mon-fri 08:00-20:00", "sat,sun 09:00-12:30,15:00-19:00" or "daily 07:00-23:00")`

// addHoursLine parses one line of hours into h.
func addHoursLine(h *Hours, line string) error {
	f := strings.Fields(line)
	if len(f) != 2 {
		return fmt.Errorf("%q is not opening hours %s", line, hoursHint)
	}
	days, err := parseDays(f[0])
	if err != nil {
		return fmt.Errorf("%q: %w", line, err)
	}
	var spans []Span
	for _, part := range strings.Split(f[1], ",") {
		a, b, ok := strings.Cut(part, "-")
		if !ok {
			return fmt.Errorf("%q: %q is not a time range (write 08:00-20:00)", line, part)
		}
		from, err1 := parseClock(a, false)
		to, err2 := parseClock(b, true)
		if err := cmpErr(err1, err2); err != nil {
			return fmt.Errorf("%q: %w", line, err)
		}
		if to <= from {
			return fmt.Errorf("%q: %s ends before it starts (to span midnight, write two ranges: 20:00-24:00 and 00:00-02:00 on the next day)", line, part)
		}
		spans = append(spans, Span{from, to})
	}
	for _, d := range days {
		h.Days[d] = mergeSpans(append(h.Days[d], spans...))
	}
	return nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func parseDays(s string) ([]time.Weekday, error) {
	if s == "daily" {
		return []time.Weekday{0, 1, 2, 3, 4, 5, 6}, nil
	}
	var out []time.Weekday
	for _, part := range strings.Split(s, ",") {
		a, b, isRange := strings.Cut(part, "-")
		from, err := parseDay(a)
		if err != nil {
			return nil, err
		}
		if !isRange {
			out = append(out, from)
			continue
		}
		to, err := parseDay(b)
		if err != nil {
			return nil, err
		}
		for d := from; ; d = (d + 1) % 7 { // fri-mon wraps over the weekend
			out = append(out, d)
			if d == to {
				break
			}
		}
	}
	return out, nil
}

func parseDay(s string) (time.Weekday, error) {
	i := slices.Index(dayNames, strings.ToLower(s))
	if i >= 0 {
		return time.Weekday(i), nil
	}
	hint := "use mon, tue, wed, thu, fri, sat, sun or daily"
	if c := yamlconf.Closest(s, dayNames); c != "" {
		hint = fmt.Sprintf("did you mean %q?", c)
	}
	return 0, fmt.Errorf("%q is not a day (%s)", s, hint)
}

func parseClock(s string, end bool) (int, error) {
	hh, mm, ok := strings.Cut(s, ":")
	h, err1 := strconv.Atoi(hh)
	m, err2 := strconv.Atoi(mm)
	if !ok || len(hh) != 2 || len(mm) != 2 || err1 != nil || err2 != nil || m < 0 || m > 59 || h < 0 || h > 24 || (h == 24 && (m != 0 || !end)) {
		return 0, fmt.Errorf("%q is not a time of day (write 24-hour HH:MM, 00:00 to 24:00)", s)
	}
	return h*60 + m, nil
}

func mergeSpans(s []Span) []Span {
	slices.SortFunc(s, func(a, b Span) int { return a.From - b.From })
	var out []Span
	for _, x := range s {
		if n := len(out); n > 0 && x.From <= out[n-1].To {
			out[n-1].To = max(out[n-1].To, x.To)
			continue
		}
		out = append(out, x)
	}
	return out
}
