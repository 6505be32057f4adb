package stats_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/stats"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/civicwifi/civicwifi/controller/internal/store/boltstore"
	"github.com/civicwifi/civicwifi/controller/internal/store/redisstore"
	"github.com/civicwifi/civicwifi/internal/redistest"
	"github.com/google/go-cmp/cmp"
)

var rome = mustLoc("Europe/Rome")

func mustLoc(name string) *time.Location {
	l, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return l
}

// tempDir is a directory on tmpfs when there is one (bbolt fsyncs each
// event; on tmpfs that costs nothing), else t.TempDir.
func tempDir(tb testing.TB) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "cwstats-")
		if err == nil {
			tb.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return tb.TempDir()
}

func openStore(tb testing.TB) *boltstore.Store {
	tb.Helper()
	st, err := boltstore.Open(filepath.Join(tempDir(tb), "store.db"), boltstore.Options{Location: rome})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

// agg is the independent expectation for one (site or town, period).
type agg struct {
	sessions           int64
	users              map[string]bool
	onlineMS, down, up int64
	methods            map[string]int64
}

func newAgg() *agg { return &agg{users: map[string]bool{}, methods: map[string]int64{}} }

// session is one generated session: its events in order.
type session struct {
	site, user, method string
	start              time.Time
	steps              []time.Duration // offsets of interims, the last one is the stop
	open               bool            // no stop
}

// generate makes sessions from Sep 28 to Nov 3 2026 (Rome), with forced
// ones crossing midnight, the Sep/Oct and Oct/Nov boundaries and the
// 25 October DST change.
func generate(r *rand.Rand, sites []string, n int) []session {
	methods := []string{"click-through", "sms", "spid", "voucher", "sms"}
	var out []session
	at := func(s string) time.Time {
		t, err := time.ParseInLocation("2006-01-02 15:04", s, rome)
		if err != nil {
			panic(err)
		}
		return t
	}
	// forced edge cases
	out = append(out,
		session{site: sites[0], user: "u-edge-1", method: "sms", start: at("2026-09-30 23:40"), steps: []time.Duration{10 * time.Minute, 25 * time.Minute, 50 * time.Minute}},
		session{site: sites[0], user: "u-edge-2", method: "spid", start: at("2026-10-31 23:50"), steps: []time.Duration{5 * time.Minute, 20 * time.Minute, 95 * time.Minute}},
		session{site: sites[1], user: "u-edge-1", method: "click-through", start: at("2026-10-14 23:30"), steps: []time.Duration{45 * time.Minute, 3 * time.Hour}},
		session{site: sites[1], user: "u-edge-3", method: "voucher", start: at("2026-10-25 01:30"), steps: []time.Duration{time.Hour, 2 * time.Hour, 3 * time.Hour}}, // across the DST change
		session{site: sites[2], user: "u-edge-4", method: "sms", start: at("2026-10-31 22:00"), steps: []time.Duration{time.Hour, 90 * time.Minute}, open: true},
	)
	lo, hi := at("2026-09-28 00:00"), at("2026-11-03 00:00")
	for range n {
		s := session{
			site:   sites[r.IntN(len(sites))],
			user:   fmt.Sprintf("u%03d", r.IntN(60)),
			method: methods[r.IntN(len(methods))],
			start:  lo.Add(time.Duration(r.Int64N(int64(hi.Sub(lo))))).Truncate(time.Millisecond),
			open:   r.IntN(10) == 0,
		}
		if r.IntN(15) == 0 {
			s.user = "" // a session without a user id (counted, not a distinct user)
		}
		off := time.Duration(0)
		for range 1 + r.IntN(5) {
			off += time.Duration(1+r.IntN(40)) * time.Minute
			s.steps = append(s.steps, off)
		}
		out = append(out, s)
	}
	return out
}

// events turns sessions into events (cumulative bytes), with replays.
func events(r *rand.Rand, ss []session) []store.SessionEvent {
	var out []store.SessionEvent
	for i, s := range ss {
		id := fmt.Sprintf("s%04d", i)
		mac := fmt.Sprintf("02:00:00:00:%02x:%02x", i/256, i%256)
		ev := store.SessionEvent{
			ID: id + "-0", Kind: store.EventStart, SessionID: id, GatewayID: "gw-" + s.site, SiteID: s.site,
			ClientMAC: mac, UserID: s.user, Method: s.method, Start: s.start, At: s.start,
		}
		out = append(out, ev)
		var down, up uint64
		for j, off := range s.steps {
			down += uint64(r.IntN(50_000_000))
			up += uint64(r.IntN(5_000_000))
			e := ev
			e.ID, e.Kind, e.At, e.BytesDown, e.BytesUp = fmt.Sprintf("%s-%d", id, j+1), store.EventInterim, s.start.Add(off), down, up
			if j == len(s.steps)-1 && !s.open {
				e.Kind, e.Reason = store.EventStop, "logout"
			}
			out = append(out, e)
			if r.IntN(8) == 0 {
				out = append(out, e) // a replay: counted once
			}
		}
	}
	return out
}

// expect computes, from the raw events alone, the totals per key: key(site,
// t) names the bucket of a time. Sessions, methods and users count in the
// bucket of the session's start; bytes and online time in the bucket of the
// event that reported them.
func expect(evs []store.SessionEvent, key func(site string, t time.Time) []string) map[string]*agg {
	out := map[string]*agg{}
	get := func(k string) *agg {
		if out[k] == nil {
			out[k] = newAgg()
		}
		return out[k]
	}
	type state struct {
		last       time.Time
		down, up   uint64
		closed     bool
		seenEvents map[string]bool
	}
	sess := map[string]*state{}
	for _, ev := range evs {
		s := sess[ev.SessionID]
		if s == nil {
			s = &state{last: ev.Start, seenEvents: map[string]bool{}}
			sess[ev.SessionID] = s
			for _, k := range key(ev.SiteID, ev.Start) {
				a := get(k)
				a.sessions++
				a.methods[ev.Method]++
				if ev.UserID != "" {
					a.users[ev.UserID] = true
				}
			}
		}
		if s.seenEvents[ev.ID] {
			continue
		}
		s.seenEvents[ev.ID] = true
		for _, k := range key(ev.SiteID, ev.At) {
			a := get(k)
			a.down += int64(ev.BytesDown - s.down)
			a.up += int64(ev.BytesUp - s.up)
			if !s.closed {
				a.onlineMS += ev.At.Sub(s.last).Milliseconds()
			}
		}
		s.down, s.up, s.last = ev.BytesDown, ev.BytesUp, ev.At
		if ev.Kind == store.EventStop {
			s.closed = true
		}
	}
	return out
}

func seed(t testing.TB, st store.Store, evs []store.SessionEvent) {
	t.Helper()
	ctx := context.Background()
	for _, ev := range evs {
		if _, err := st.RecordEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
}

// readCSV parses a report with encoding/csv after checking the BOM and the
// CRLF line ends, and returns the header and the records.
func readCSV(t *testing.T, b []byte, withBOM bool) ([]string, [][]string) {
	t.Helper()
	if withBOM {
		var ok bool
		if b, ok = bytes.CutPrefix(b, []byte("\ufeff")); !ok {
			t.Fatalf("no UTF-8 BOM at the start: %q", b[:min(len(b), 8)])
		}
	}
	if !bytes.HasSuffix(b, []byte("\r\n")) || bytes.Count(b, []byte("\n")) != bytes.Count(b, []byte("\r\n")) {
		t.Fatalf("line ends are not all CRLF")
	}
	r := csv.NewReader(bytes.NewReader(b))
	recs, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return recs[0], recs[1:]
}

func row(a *agg, methods []string, users int64, userDays int64) []string {
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	out := []string{i(a.sessions), i(users), i(userDays), i(stats.Minutes(a.onlineMS)), i(a.down), i(a.up)}
	for _, m := range methods {
		out = append(out, i(a.methods[m]))
	}
	return out
}

func TestMonthlyCSVMatchesRawEvents(t *testing.T) {
	t.Run("bolt", func(t *testing.T) { testMonthlyCSV(t, openStore(t)) })
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		st, err := redisstore.Open(context.Background(), srv.URL(), redisstore.Options{Location: rome})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		testMonthlyCSV(t, st)
	})
}

func testMonthlyCSV(t *testing.T, st store.Store) {
	ctx := context.Background()
	siteIDs := []string{"parco-pertini", "biblioteca", "museo", "municipio"}
	r := rand.New(rand.NewPCG(6, 2026))
	evs := events(r, generate(r, siteIDs, 260))
	seed(t, st, evs)
	e := stats.New(st, rome)
	ss := []stats.Site{
		{ID: "parco-pertini", Name: "Parco Pertini", Kind: "park"},
		{ID: "biblioteca", Name: "Biblioteca civica \"Ricottiana\", sala lettura", Kind: "library"},
		{ID: "museo", Name: "Museo di scienze naturali\nCasa Gallini", Kind: "museum"},
		{ID: "municipio", Name: "=Municipio (città)", Kind: "office"},
	}

	month := func(site string, t time.Time) []string {
		m := t.In(rome).Format("2006-01")
		return []string{site + "|" + m, "town|" + m}
	}
	day := func(site string, t time.Time) []string { return []string{site + "|" + t.In(rome).Format("2006-01-02")} }
	want := expect(evs, month)
	wantDays := expect(evs, day)
	userDays := func(site string, from, to string) int64 { // sum of each day's distinct users, from the raw events
		var n int64
		for k, a := range wantDays {
			s, d, _ := strings.Cut(k, "|")
			if s == site && d >= from && d < to {
				n += int64(len(a.users))
			}
		}
		return n
	}

	t.Run("town", func(t *testing.T) {
		rep, err := e.TownReport(ctx, "Voghera", ss, "2026-10")
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := rep.WriteCSV(&buf, stats.CSVOptions{BOM: true}); err != nil {
			t.Fatal(err)
		}
		head, recs := readCSV(t, buf.Bytes(), true)
		methods := []string{"click-through", "sms", "spid", "voucher"}
		if diff := cmp.Diff(stats.CSVColumns(methods), head); diff != "" {
			t.Errorf("header (-want +got):\n%s", diff)
		}
		var wantRecs [][]string
		var allDays int64
		for _, s := range ss {
			a := want[s.ID+"|2026-10"]
			ud := userDays(s.ID, "2026-10-01", "2026-11-01")
			allDays += ud
			wantRecs = append(wantRecs, append([]string{"site", "2026-10", stats.Text(s.ID), stats.Text(s.Name), s.Kind}, row(a, methods, int64(len(a.users)), ud)...))
		}
		a := want["town|2026-10"]
		wantRecs = append(wantRecs, append([]string{"total", "2026-10", "", "Voghera", ""}, row(a, methods, int64(len(a.users)), allDays)...))
		if diff := cmp.Diff(wantRecs, recs); diff != "" {
			t.Errorf("October's CSV (-want +got):\n%s", diff)
		}
		// the numbers are not trivially zero, and the edge cases landed
		if a.sessions < 100 || a.down == 0 || len(a.users) < 20 {
			t.Fatalf("generated month too thin: %+v", a)
		}
		if recs[3][3] != "'=Municipio (città)" {
			t.Errorf("a formula-like name is not defused: %q", recs[3][3])
		}
		if !bytes.Contains(buf.Bytes(), []byte("\"Biblioteca civica \"\"Ricottiana\"\", sala lettura\"")) ||
			!bytes.Contains(buf.Bytes(), []byte("\"Museo di scienze naturali\r\nCasa Gallini\"")) {
			t.Errorf("quoting of a name with quotes, comma or newline is not RFC 4180:\n%s", buf.String())
		}
	})

	t.Run("site", func(t *testing.T) {
		s := ss[0]
		rep, err := e.SiteReport(ctx, "Voghera", s, "2026-10")
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := rep.WriteCSV(&buf, stats.CSVOptions{}); err != nil {
			t.Fatal(err)
		}
		_, recs := readCSV(t, buf.Bytes(), false)
		if len(recs) != 32 { // 31 days + total
			t.Fatalf("got %d rows, want 32", len(recs))
		}
		methods := []string{"click-through", "sms", "spid", "voucher"}
		var wantRecs [][]string
		for d := 1; d <= 31; d++ {
			p := fmt.Sprintf("2026-10-%02d", d)
			a := wantDays[s.ID+"|"+p]
			if a == nil {
				a = newAgg()
			}
			wantRecs = append(wantRecs, append([]string{"day", p, s.ID, s.Name, s.Kind}, row(a, methods, int64(len(a.users)), int64(len(a.users)))...))
		}
		a := want[s.ID+"|2026-10"]
		wantRecs = append(wantRecs, append([]string{"total", "2026-10", s.ID, s.Name, s.Kind}, row(a, methods, int64(len(a.users)), userDays(s.ID, "2026-10-01", "2026-11-01"))...))
		if diff := cmp.Diff(wantRecs, recs); diff != "" {
			t.Errorf("the site's October CSV (-want +got):\n%s", diff)
		}
	})

	t.Run("series", func(t *testing.T) {
		ids := siteIDs
		pts, err := e.Series(ctx, ids, time.Date(2026, 9, 1, 0, 0, 0, 0, rome), time.Date(2026, 12, 1, 0, 0, 0, 0, rome), stats.Month)
		if err != nil {
			t.Fatal(err)
		}
		var got, wantS []string
		for _, p := range pts {
			got = append(got, fmt.Sprintf("%s sessions=%d users=%d online=%d down=%d up=%d sms=%d", p.Start.Format("2006-01"), p.Sessions, p.DistinctUsers, p.OnlineMS, p.BytesDown, p.BytesUp, p.Methods["sms"]))
		}
		for _, m := range []string{"2026-09", "2026-10", "2026-11"} {
			a := want["town|"+m]
			wantS = append(wantS, fmt.Sprintf("%s sessions=%d users=%d online=%d down=%d up=%d sms=%d", m, a.sessions, len(a.users), a.onlineMS, a.down, a.up, a.methods["sms"]))
		}
		if diff := cmp.Diff(wantS, got); diff != "" {
			t.Errorf("monthly series (-want +got):\n%s", diff)
		}
		// hourly points over the DST change sum to the day's totals
		from := time.Date(2026, 10, 25, 0, 0, 0, 0, rome)
		hrs, err := e.Series(ctx, ids, from, from.AddDate(0, 0, 1), stats.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if len(hrs) != 25 {
			t.Errorf("25 October 2026 has %d hourly points, want 25", len(hrs))
		}
		var sum stats.Totals
		for _, h := range hrs {
			sum.Sessions += h.Sessions
			sum.OnlineMS += h.OnlineMS
			sum.BytesDown += h.BytesDown
		}
		var wd agg
		for _, s := range ids {
			if a := wantDays[s+"|2026-10-25"]; a != nil {
				wd.sessions += a.sessions
				wd.onlineMS += a.onlineMS
				wd.down += a.down
			}
		}
		if got, want := [3]int64{sum.Sessions, sum.OnlineMS, sum.BytesDown}, [3]int64{wd.sessions, wd.onlineMS, wd.down}; got != want {
			t.Errorf("25 October by hour: got %v, want %v", got, want)
		}
		// a period that is not day aligned: hours at both ends, days in between
		a0, a1 := time.Date(2026, 10, 3, 17, 0, 0, 0, rome), time.Date(2026, 10, 19, 9, 0, 0, 0, rome)
		tot, err := e.Totals(ctx, ids[:1], a0, a1)
		if err != nil {
			t.Fatal(err)
		}
		exp := expect(evs, func(site string, t time.Time) []string {
			if site == ids[0] && !t.Before(a0) && t.Before(a1) {
				return []string{"x"}
			}
			return nil
		})["x"]
		if got, want := [4]int64{tot.Sessions, tot.OnlineMS, tot.BytesDown, tot.BytesUp}, [4]int64{exp.sessions, exp.onlineMS, exp.down, exp.up}; got != want {
			t.Errorf("totals of [%v, %v): got %v, want %v", a0, a1, got, want)
		}
	})
}

func TestBadQueries(t *testing.T) {
	ctx := context.Background()
	e := stats.New(openStore(t), rome)
	now := time.Date(2026, 10, 1, 0, 0, 0, 0, rome)
	for _, tc := range []struct {
		name string
		f    func() error
		want string
	}{
		{"month", func() error { _, err := e.TownReport(ctx, "T", []stats.Site{{ID: "a"}}, "2026-13"); return err }, `month "2026-13" is not YYYY-MM`},
		{"month format", func() error { _, err := e.TownReport(ctx, "T", []stats.Site{{ID: "a"}}, "10/2026"); return err }, `month "10/2026" is not YYYY-MM`},
		{"no site", func() error { _, err := e.TownReport(ctx, "T", nil, "2026-10"); return err }, "the town has no site"},
		{"empty period", func() error { _, err := e.Totals(ctx, []string{"a"}, now, now); return err }, "is empty"},
		{"step", func() error { _, err := e.Series(ctx, []string{"a"}, now, now.Add(time.Hour), "week"); return err }, `step "week"`},
		{"too many points", func() error {
			_, err := e.Series(ctx, []string{"a"}, now, now.AddDate(3, 0, 0), stats.Hour)
			return err
		}, "more than 10000 hours"},
		{"bad site id", func() error { _, err := e.Totals(ctx, []string{"a b"}, now, now.Add(time.Hour)); return err }, "site id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestCSVQuoting round-trips awkward text through WriteCSV and
// encoding/csv, and pins the exact bytes of a small report.
func TestCSVQuoting(t *testing.T) {
	names := []string{
		`plain`, `with, comma`, `with "quotes"`, "two\nlines", "cr\r\nlf", `"`, `,`, ` leading space`,
		`Città di Voghera – àèìòù €`, `trailing space `, `=1+1`, `+39 0383`, `-x`, `@SUM(A1)`, "\ttab", ``,
	}
	rep := stats.Report{Month: "2026-10", Methods: []string{"sms", "odd,method"}}
	for i, n := range names {
		rep.Rows = append(rep.Rows, stats.Row{Row: stats.RowSite, Period: "2026-10", Site: fmt.Sprintf("s%d", i), SiteName: n,
			Totals: stats.Totals{Sessions: int64(i), Methods: map[string]int64{"sms": 1, "odd,method": 2}}})
	}
	rep.Total = stats.Row{Row: stats.RowTotal, Period: "2026-10", SiteName: "Voghera"}
	var buf bytes.Buffer
	if err := rep.WriteCSV(&buf, stats.CSVOptions{}); err != nil {
		t.Fatal(err)
	}
	head, recs := readCSV(t, buf.Bytes(), false)
	if head[len(head)-1] != "sessions_odd,method" {
		t.Errorf("last header %q", head[len(head)-1])
	}
	var got []string
	for _, r := range recs[:len(names)] {
		got = append(got, r[3])
	}
	want := slices.Clone(names)
	for i, n := range want {
		want[i] = stats.Text(n)
	}
	want[4] = "cr\nlf" // encoding/csv reads a quoted CRLF as LF
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("names after a round trip (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"'=1+1", "'+39 0383", "'-x", "'@SUM(A1)", "'\ttab"}, got[10:15]); diff != "" {
		t.Errorf("formula-like text (-want +got):\n%s", diff)
	}

	small := stats.Report{Methods: []string{"sms"}, Rows: []stats.Row{{Row: "site", Period: "2026-10", Site: "a", SiteName: "Parco \"Pertini\", Voghera", Kind: "park",
		Totals: stats.Totals{Sessions: 3, DistinctUsers: 2, UserDays: 2, OnlineMS: 90_000, BytesDown: 10, BytesUp: 1, Methods: map[string]int64{"sms": 3}}}},
		Total: stats.Row{Row: "total", Period: "2026-10", SiteName: "Voghera"}}
	buf.Reset()
	if err := small.WriteCSV(&buf, stats.CSVOptions{BOM: true}); err != nil {
		t.Fatal(err)
	}
	wantBytes := "\ufeffrow,period,site,site_name,kind,sessions,distinct_users,user_days,online_minutes,bytes_down,bytes_up,sessions_sms\r\n" +
		"site,2026-10,a,\"Parco \"\"Pertini\"\", Voghera\",park,3,2,2,2,10,1,3\r\n" +
		"total,2026-10,,Voghera,,0,0,0,0,0,0,0\r\n"
	if diff := cmp.Diff(wantBytes, buf.String()); diff != "" {
		t.Errorf("exact bytes (-want +got):\n%s", diff)
	}
}
