// Package stats answers the statistics questions of the dashboard, the
// reports and the metrics: sessions, distinct users, hours online, bytes and
// logins by method, for one site or the whole town, over a period or as a
// series of hours, days or months. It reads the store's rollups (never raw
// events), so a year for twenty sites is a few hundred reads.
//
// Periods are in the town's time zone (the Location given to New), which
// must be the Location the store was opened with: the store's daily rollups
// and distinct-user sets begin at that zone's midnight.
package stats

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/store"
)

// ErrInvalid is returned (wrapped, with what) for a bad query.
var ErrInvalid = errors.New("invalid query")

// MaxSpan bounds a query's period (ten years, as the store's MaxDays).
const MaxSpan = store.MaxDays * 24 * time.Hour

// maxPoints bounds a series (a year of hours is 8,784).
const maxPoints = 10_000

// Totals are what happened in a period at one site or several.
type Totals struct {
	// Sessions started in the period (counted in their start hour).
	Sessions int64 `json:"sessions"`
	// DistinctUsers who started a session in the period, counted over the
	// whole days the period touches (user sets are per day): a user of
	// several sites or days counts once. Zero for hourly points.
	DistinctUsers int `json:"distinct_users"`
	// UserDays is the sum over whole days of each day's distinct users;
	// it outlives the user sets (retention purges them, not the counter).
	UserDays int64 `json:"user_days"`
	// OnlineMS is session time, counted in the hour of the event that
	// reported it (time since the session's previous event).
	OnlineMS int64 `json:"online_ms"`
	// BytesDown and BytesUp are bytes counted in the period, in the hour
	// of the event that reported them.
	BytesDown int64 `json:"bytes_down"`
	BytesUp   int64 `json:"bytes_up"`
	// Methods are the sessions started per login method (method name as the
	// gateway reported it, e.g. "sms"). Never nil.
	Methods map[string]int64 `json:"methods"`
}

// OnlineHours is OnlineMS in hours.
func (t Totals) OnlineHours() float64 {
	return float64(t.OnlineMS) / float64(time.Hour/time.Millisecond)
}

func (t *Totals) add(c map[string]int64) {
	if t.Methods == nil {
		t.Methods = map[string]int64{}
	}
	for k, v := range c {
		switch k {
		case store.CounterSessions:
			t.Sessions += v
		case store.CounterUsers:
			t.UserDays += v
		case store.CounterOnlineMS:
			t.OnlineMS += v
		case store.CounterBytesDown:
			t.BytesDown += v
		case store.CounterBytesUp:
			t.BytesUp += v
		default:
			if m, ok := strings.CutPrefix(k, "method:"); ok {
				t.Methods[m] += v
			}
		}
	}
}

func (t *Totals) merge(o Totals) {
	if t.Methods == nil {
		t.Methods = map[string]int64{}
	}
	t.Sessions += o.Sessions
	t.UserDays += o.UserDays
	t.OnlineMS += o.OnlineMS
	t.BytesDown += o.BytesDown
	t.BytesUp += o.BytesUp
	for k, v := range o.Methods {
		t.Methods[k] += v
	}
}

// Step is the width of a series' points.
type Step string

// The steps.
const (
	Hour  Step = "hour"  // UTC hours (whole hours in the town's zone too)
	Day   Step = "day"   // calendar days in the town's zone (23 or 25 hours at DST changes)
	Month Step = "month" // calendar months in the town's zone
)

// Point is one point of a series: the totals of [Start, End).
type Point struct {
	Start time.Time `json:"start"` // in the town's zone
	End   time.Time `json:"end"`
	Totals
}

// Engine answers statistics queries from a store's rollups. It is safe for
// concurrent use.
type Engine struct {
	st  store.Stats
	loc *time.Location
}

// New returns an engine over st whose days and months are in loc (nil:
// UTC), which must be the store's own Location.
func New(st store.Stats, loc *time.Location) *Engine {
	if loc == nil {
		loc = time.UTC
	}
	return &Engine{st: st, loc: loc}
}

// Location is the engine's time zone.
func (e *Engine) Location() *time.Location { return e.loc }

// MonthRange returns the start and end of month ("2026-10") in the
// engine's zone.
func (e *Engine) MonthRange(month string) (from, to time.Time, err error) {
	t, err := time.ParseInLocation("2006-01", month, e.loc)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("%w: month %q is not YYYY-MM (e.g. 2026-10)", ErrInvalid, month)
	}
	return t, t.AddDate(0, 1, 0), nil
}

// DayRange returns the start and end of t's calendar day in the engine's
// zone ("today" for the overview).
func (e *Engine) DayRange(t time.Time) (from, to time.Time) {
	d := store.DayStart(t, e.loc)
	return d, d.AddDate(0, 0, 1)
}

func check(siteIDs []string, from, to time.Time) error {
	if len(siteIDs) == 0 {
		return fmt.Errorf("%w: no site", ErrInvalid)
	}
	for _, s := range siteIDs {
		if err := store.CheckID("site id", s); err != nil {
			return err
		}
	}
	if !from.Before(to) {
		return fmt.Errorf("%w: period [%v, %v) is empty", ErrInvalid, from, to)
	}
	if to.Sub(from) > MaxSpan {
		return fmt.Errorf("%w: period [%v, %v) is longer than ten years", ErrInvalid, from, to)
	}
	return nil
}

// Totals returns the totals of the sites (the town: every site) in
// [from, to). Sums are exact for whole hours; DistinctUsers and UserDays
// are over the days the period touches (UserDays: whole days only).
func (e *Engine) Totals(ctx context.Context, siteIDs []string, from, to time.Time) (Totals, error) {
	if err := check(siteIDs, from, to); err != nil {
		return Totals{}, err
	}
	t := Totals{Methods: map[string]int64{}}
	for _, s := range siteIDs {
		if err := e.each(ctx, s, from, to, false, func(r store.Rollup) { t.add(r.Counters) }); err != nil {
			return Totals{}, err
		}
	}
	n, err := e.st.DistinctUsers(ctx, from, to.Add(-time.Millisecond), siteIDs...)
	if err != nil {
		return Totals{}, fmt.Errorf("counting the users of %s: %w", strings.Join(siteIDs, ","), err)
	}
	t.DistinctUsers = n
	return t, nil
}

// SiteTotals is one site's totals.
type SiteTotals struct {
	Site string `json:"site"`
	Totals
}

// BySite returns each site's totals in [from, to), in the order given, and
// the sum over them with the distinct users of all of them together (a user
// of two sites counts once in the sum).
func (e *Engine) BySite(ctx context.Context, siteIDs []string, from, to time.Time) ([]SiteTotals, Totals, error) {
	if err := check(siteIDs, from, to); err != nil {
		return nil, Totals{}, err
	}
	out := make([]SiteTotals, 0, len(siteIDs))
	sum := Totals{Methods: map[string]int64{}}
	for _, s := range siteIDs {
		t, err := e.Totals(ctx, []string{s}, from, to)
		if err != nil {
			return nil, Totals{}, err
		}
		out = append(out, SiteTotals{Site: s, Totals: t})
		sum.merge(t)
	}
	n, err := e.st.DistinctUsers(ctx, from, to.Add(-time.Millisecond), siteIDs...)
	if err != nil {
		return nil, Totals{}, fmt.Errorf("counting the users of the town: %w", err)
	}
	sum.DistinctUsers = n
	return out, sum, nil
}

// Series returns the sites' totals per step from from's step (hour, day or
// month start) to to, every point present (zeros included), oldest first.
// Day and month points carry distinct users (one store query per point);
// hour points do not.
func (e *Engine) Series(ctx context.Context, siteIDs []string, from, to time.Time, step Step) ([]Point, error) {
	if step != Hour && step != Day && step != Month {
		return nil, fmt.Errorf("%w: step %q is not hour, day or month", ErrInvalid, step)
	}
	from = e.bucket(from, step)
	if err := check(siteIDs, from, to); err != nil {
		return nil, err
	}
	var pts []Point
	idx := map[int64]int{}
	for s := from; s.Before(to); s = e.next(s, step) {
		if len(pts) == maxPoints {
			return nil, fmt.Errorf("%w: more than %d %ss from %v to %v", ErrInvalid, maxPoints, step, from, to)
		}
		idx[s.Unix()] = len(pts)
		end := e.next(s, step)
		if end.After(to) {
			end = to
		}
		pts = append(pts, Point{Start: s, End: end, Totals: Totals{Methods: map[string]int64{}}})
	}
	for _, s := range siteIDs {
		err := e.each(ctx, s, from, to, step == Hour, func(r store.Rollup) {
			if i, ok := idx[e.bucket(r.Start, step).Unix()]; ok {
				pts[i].add(r.Counters)
			}
		})
		if err != nil {
			return nil, err
		}
	}
	if step == Hour {
		return pts, nil
	}
	for i := range pts {
		n, err := e.st.DistinctUsers(ctx, pts[i].Start, pts[i].End.Add(-time.Millisecond), siteIDs...)
		if err != nil {
			return nil, fmt.Errorf("counting the users of %s: %w", strings.Join(siteIDs, ","), err)
		}
		pts[i].DistinctUsers = n
	}
	return pts, nil
}

// bucket is the start of t's step in the engine's zone.
func (e *Engine) bucket(t time.Time, step Step) time.Time {
	switch step {
	case Hour:
		return store.HourOf(t).In(e.loc)
	case Month:
		y, m, _ := t.In(e.loc).Date()
		return time.Date(y, m, 1, 0, 0, 0, 0, e.loc)
	default:
		return store.DayStart(t, e.loc)
	}
}

func (e *Engine) next(t time.Time, step Step) time.Time {
	switch step {
	case Hour:
		return t.Add(time.Hour)
	case Month:
		return t.AddDate(0, 1, 0)
	default:
		return t.AddDate(0, 0, 1)
	}
}

// each calls f with the rollups that cover [from, to) for site: daily
// rollups for the whole days inside it, hourly ones for the hours before
// the first and after the last midnight (hourly ones throughout if
// hourly).
func (e *Engine) each(ctx context.Context, site string, from, to time.Time, hourly bool, f func(store.Rollup)) error {
	hours := func(a, b time.Time) error {
		if !a.Before(b) {
			return nil
		}
		rs, err := e.st.Hourly(ctx, site, a, b)
		if err != nil {
			return fmt.Errorf("reading the hours of %s: %w", site, err)
		}
		for _, r := range rs {
			f(r)
		}
		return nil
	}
	d0 := store.DayStart(from, e.loc)
	if d0.Before(from) {
		d0 = d0.AddDate(0, 0, 1)
	}
	dn := store.DayStart(to, e.loc)
	if hourly || !d0.Before(dn) {
		return hours(from, to)
	}
	if err := hours(from, d0); err != nil {
		return err
	}
	rs, err := e.st.Daily(ctx, site, d0, dn)
	if err != nil {
		return fmt.Errorf("reading the days of %s: %w", site, err)
	}
	for _, r := range rs {
		f(r)
	}
	return hours(dn, to)
}

// MethodNames returns the methods of ts in report order: the known ones
// (always, in the order given) then any other, alphabetically.
func MethodNames(known []string, ts ...Totals) []string {
	out := slices.Clone(known)
	var extra []string
	for _, t := range ts {
		for m := range t.Methods {
			if !slices.Contains(out, m) && !slices.Contains(extra, m) {
				extra = append(extra, m)
			}
		}
	}
	slices.Sort(extra)
	return append(out, extra...)
}
