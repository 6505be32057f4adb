package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/labstack/echo/v4"
)

// siteRow is one site on the overview.
type siteRow struct {
	ID, Name, Kind, Address string
	Coordinates             sites.Coordinates
	State                   string // "up" (every gateway up), "partial", "down", "unknown" (never heard from)
	GatewaysUp, Gateways    int
	APsUp, APs              int
	Online                  int   // open sessions
	SessionsToday           int64 // sessions started today
	BytesToday              int64
}

type overviewData struct {
	Sites         []siteRow
	Map           mapSVG
	Online        int // open sessions, all sites
	UsersOnline   int // distinct pseudonymous users among them
	SessionsToday int64
	UsersToday    int
	BytesToday    int64
	SitesUp       int
	Day           time.Time
}

func (d *Dashboard) dayStart(t time.Time) time.Time {
	t = t.In(d.loc())
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, d.loc())
}

// gatewayState reads the site's gateways' heartbeats.
func (d *Dashboard) siteState(s *sites.Site, gws map[string]store.GatewayStatus, aps map[string]store.APStatus, now time.Time) (state string, up, apsUp int) {
	heard := false
	for _, g := range s.Gateways {
		st, ok := gws[g.ID]
		if ok && !st.LastHeartbeat.IsZero() {
			heard = true
		}
		if ok && st.Up(now, d.o.GatewayWithin) {
			up++
		}
	}
	for _, a := range s.AccessPoints {
		if st, ok := aps[a.MAC]; ok && st.Up(now, d.o.APWithin) {
			apsUp++
		}
	}
	switch {
	case len(s.Gateways) > 0 && up == len(s.Gateways):
		state = "up"
	case up > 0:
		state = "partial"
	case heard:
		state = "down"
	default:
		state = "unknown"
	}
	return state, up, apsUp
}

func (d *Dashboard) fleet(ctx context.Context) (map[string]store.GatewayStatus, map[string]store.APStatus, error) {
	gl, err := d.o.Store.ListGateways(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("listing gateways: %w", err)
	}
	al, err := d.o.Store.ListAccessPoints(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("listing access points: %w", err)
	}
	gws := make(map[string]store.GatewayStatus, len(gl))
	for _, g := range gl {
		gws[g.ID] = g
	}
	aps := make(map[string]store.APStatus, len(al))
	for _, a := range al {
		aps[a.MAC] = a
	}
	return gws, aps, nil
}

func (d *Dashboard) overview(c echo.Context) error {
	ctx := c.Request().Context()
	cfg := d.o.Sites()
	now := d.o.Now()
	gws, aps, err := d.fleet(ctx)
	if err != nil {
		return err
	}
	day := d.dayStart(now)
	od := overviewData{Day: day}
	users := map[string]bool{}
	var ids []string
	for i := range cfg.Sites {
		s := &cfg.Sites[i]
		ids = append(ids, s.ID)
		row := siteRow{ID: s.ID, Name: s.Name, Kind: string(s.Kind), Address: s.Address, Coordinates: s.Coordinates,
			Gateways: len(s.Gateways), APs: len(s.AccessPoints)}
		row.State, row.GatewaysUp, row.APsUp = d.siteState(s, gws, aps, now)
		open, err := d.o.Store.OpenSessions(ctx, s.ID)
		if err != nil {
			return fmt.Errorf("reading open sessions of %s: %w", s.ID, err)
		}
		row.Online = len(open)
		for _, x := range open {
			if x.UserID != "" {
				users[x.UserID] = true
			}
		}
		days, err := d.o.Store.Daily(ctx, s.ID, day, day.AddDate(0, 0, 1))
		if err != nil {
			return fmt.Errorf("reading today's counters of %s: %w", s.ID, err)
		}
		for _, r := range days {
			row.SessionsToday += r.Counters[store.CounterSessions]
			row.BytesToday += r.Counters[store.CounterBytesDown] + r.Counters[store.CounterBytesUp]
		}
		od.Online += row.Online
		od.SessionsToday += row.SessionsToday
		od.BytesToday += row.BytesToday
		if row.State == "up" {
			od.SitesUp++
		}
		od.Sites = append(od.Sites, row)
	}
	od.UsersOnline = len(users)
	if len(ids) > 0 {
		if od.UsersToday, err = d.o.Store.DistinctUsers(ctx, now, now, ids...); err != nil {
			return fmt.Errorf("counting today's users: %w", err)
		}
	}
	od.Map = drawMap(od.Sites, Prefix+"/sites/")
	return d.render(c, http.StatusOK, "overview", page{Title: "Overview", Session: sessionOf(c), Nav: "overview", Data: od})
}

// liveSession is one row of a site's live sessions.
type liveSession struct {
	store.Session
	Since    time.Duration
	TimeLeft time.Duration // policy session time + extensions - elapsed; the gateway is authoritative
	Limited  bool          // the policy has a session time
}

type gwRow struct {
	ID     string
	State  string
	Status store.GatewayStatus
}

type apRow struct {
	sites.AccessPoint
	State  string // up, down, never
	Status store.APStatus
}

type siteData struct {
	Site       *sites.Site
	State      string
	Sessions   []liveSession
	Gateways   []gwRow
	APs        []apRow
	Totals     store.Totals
	Chart      barChart
	Vouchers   bool
	Flash      string
	ExtendMins []int
}

func (d *Dashboard) site(c echo.Context) (*sites.Site, error) {
	s := d.o.Sites().Site(c.Param("site"))
	if s == nil {
		return nil, echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("no site %q in sites.yaml", c.Param("site")))
	}
	return s, nil
}

func (d *Dashboard) sitePage(c echo.Context) error {
	ctx := c.Request().Context()
	s, err := d.site(c)
	if err != nil {
		return err
	}
	now := d.o.Now()
	gws, aps, err := d.fleet(ctx)
	if err != nil {
		return err
	}
	sd := siteData{Site: s, Vouchers: d.o.Vouchers != nil, ExtendMins: []int{15, 30, 60, 120}}
	switch c.QueryParam("done") {
	case "kick":
		sd.Flash = "Disconnect queued for " + c.QueryParam("mac") + ": the gateway applies it at its next command poll (seconds)."
	case "extend":
		sd.Flash = "Extension queued for " + c.QueryParam("mac") + "."
	}
	sd.State, _, _ = d.siteState(s, gws, aps, now)
	open, err := d.o.Store.OpenSessions(ctx, s.ID)
	if err != nil {
		return fmt.Errorf("reading open sessions of %s: %w", s.ID, err)
	}
	for _, x := range open {
		ls := liveSession{Session: x, Since: now.Sub(x.Start)}
		if s.Policy.Session > 0 {
			ls.Limited = true
			ext, err := d.extended(ctx, x.ID)
			if err != nil {
				return err
			}
			ls.TimeLeft = max(0, s.Policy.Session+ext-ls.Since)
		}
		sd.Sessions = append(sd.Sessions, ls)
	}
	for _, g := range s.Gateways {
		st, ok := gws[g.ID]
		row := gwRow{ID: g.ID, Status: st, State: "never"}
		if ok {
			row.State = "down"
			if st.Up(now, d.o.GatewayWithin) {
				row.State = "up"
			}
		}
		sd.Gateways = append(sd.Gateways, row)
	}
	for _, a := range s.AccessPoints {
		st, ok := aps[a.MAC]
		row := apRow{AccessPoint: a, Status: st, State: "never"}
		if ok {
			row.State = "down"
			if st.Up(now, d.o.APWithin) {
				row.State = "up"
			}
		}
		sd.APs = append(sd.APs, row)
	}
	if sd.Totals, err = d.o.Store.SiteTotals(ctx, s.ID); err != nil {
		return fmt.Errorf("reading totals of %s: %w", s.ID, err)
	}
	// The last 48 hours, hour by hour.
	to := now.Truncate(time.Hour).Add(time.Hour)
	from := to.Add(-48 * time.Hour)
	hours, err := d.o.Store.Hourly(ctx, s.ID, from, to)
	if err != nil {
		return fmt.Errorf("reading hourly counters of %s: %w", s.ID, err)
	}
	sd.Chart = barsOf("Sessions started per hour, last 48 hours", buckets(from, 48, func(t time.Time) time.Time { return t.Add(time.Hour) }),
		hours, store.CounterSessions, d.loc(), "15", nil)
	return d.render(c, http.StatusOK, "site", page{Title: s.Name, Session: sessionOf(c), Nav: "overview", Data: sd})
}

const keyExtend = "dashboard/extend/" // + session id: seconds added by extensions

func (d *Dashboard) extended(ctx context.Context, sessionID string) (time.Duration, error) {
	b, err := d.o.Store.Get(ctx, keyExtend+hashID(sessionID))
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading extensions: %w", err)
	}
	n, _ := strconv.ParseInt(string(b), 10, 64)
	return time.Duration(n) * time.Second, nil
}

// openSession finds the open session of mac at the site: an action on a
// client that is not online there is refused, not queued.
func (d *Dashboard) openSession(ctx context.Context, s *sites.Site, macText string) (store.Session, error) {
	mac, err := net.ParseMAC(strings.TrimSpace(macText))
	if err != nil || len(mac) != 6 {
		return store.Session{}, echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("mac %q is not a MAC address (like 02:00:5e:00:00:01)", macText))
	}
	open, err := d.o.Store.OpenSessions(ctx, s.ID)
	if err != nil {
		return store.Session{}, fmt.Errorf("reading open sessions of %s: %w", s.ID, err)
	}
	for _, x := range open {
		if strings.EqualFold(x.ClientMAC, mac.String()) {
			return x, nil
		}
	}
	return store.Session{}, echo.NewHTTPError(http.StatusConflict, fmt.Sprintf("no open session of %s at %s: nothing queued", mac, s.ID))
}

// queue sends c to every gateway of the site, through the Commander when
// there is one (it audits), else straight into the store (audited here).
func (d *Dashboard) queue(ctx context.Context, s *sites.Site, c store.Command, actor string) error {
	c.Created = d.o.Now()
	if d.o.Commands != nil {
		_, err := d.o.Commands.EnqueueCommand(ctx, s.ID, c, actor)
		return err
	}
	if len(s.Gateways) == 0 {
		return echo.NewHTTPError(http.StatusConflict, "the site has no gateway")
	}
	for _, g := range s.Gateways {
		x := c
		x.GatewayID = g.ID
		q, err := d.o.Store.Enqueue(ctx, x)
		if err != nil {
			return fmt.Errorf("queueing %s for %s: %w", c.Kind, g.ID, err)
		}
		d.audit(ctx, actor, "command."+string(c.Kind), c.ClientMAC, g.ID+" "+q.ID)
	}
	return nil
}

func (d *Dashboard) kick(c echo.Context) error {
	ctx := c.Request().Context()
	s, err := d.site(c)
	if err != nil {
		return err
	}
	x, err := d.openSession(ctx, s, c.FormValue("mac"))
	if err != nil {
		return err
	}
	if err := d.queue(ctx, s, store.Command{Kind: store.CommandKick, ClientMAC: x.ClientMAC}, sessionOf(c).User); err != nil {
		return err
	}
	return c.Redirect(http.StatusSeeOther, Prefix+"/sites/"+s.ID+"?done=kick&mac="+urlQueryEscape(x.ClientMAC))
}

func (d *Dashboard) extend(c echo.Context) error {
	ctx := c.Request().Context()
	s, err := d.site(c)
	if err != nil {
		return err
	}
	mins, err := strconv.Atoi(c.FormValue("minutes"))
	if err != nil || mins < 1 || mins > 24*60 {
		return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("minutes %q: give a whole number from 1 to 1440", c.FormValue("minutes")))
	}
	x, err := d.openSession(ctx, s, c.FormValue("mac"))
	if err != nil {
		return err
	}
	by := time.Duration(mins) * time.Minute
	if err := d.queue(ctx, s, store.Command{Kind: store.CommandExtend, ClientMAC: x.ClientMAC, Extend: by}, sessionOf(c).User); err != nil {
		return err
	}
	// Remembered for the time-left column only (the gateway has the command). Get and Put, not Incr: a
	// counter's stored form differs between the store implementations. Two admins extending one session at
	// the same instant may see one extension here; the gateway still gets both.
	prev, err := d.extended(ctx, x.ID)
	if err != nil {
		return err
	}
	if err := d.o.Store.Put(ctx, keyExtend+hashID(x.ID), []byte(strconv.FormatInt(int64((prev+by).Seconds()), 10)), 7*24*time.Hour); err != nil {
		d.log.Warn("remembering an extension", "err", err)
	}
	return c.Redirect(http.StatusSeeOther, Prefix+"/sites/"+s.ID+"?done=extend&mac="+urlQueryEscape(x.ClientMAC))
}

type auditData struct {
	Entries []store.AuditEntry
	Days    int
}

func (d *Dashboard) auditPage(c echo.Context) error {
	days := 7
	if v, err := strconv.Atoi(c.QueryParam("days")); err == nil && v >= 1 && v <= 366 {
		days = v
	}
	now := d.o.Now()
	es, err := d.o.Store.ListAudit(c.Request().Context(), now.AddDate(0, 0, -days), now.Add(time.Second), 1000)
	if err != nil {
		return fmt.Errorf("reading the audit log: %w", err)
	}
	return d.render(c, http.StatusOK, "audit", page{Title: "Audit log", Session: sessionOf(c), Nav: "audit", Data: auditData{Entries: es, Days: days}})
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
