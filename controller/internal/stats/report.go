package stats

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/sites"
)

// Site names a site in a report.
type Site struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Kind string `json:"kind"`
}

// SitesOf lists the sites of a sites.yaml, in file order.
func SitesOf(cfg *sites.Config) []Site {
	out := make([]Site, 0, len(cfg.Sites))
	for _, s := range cfg.Sites {
		out = append(out, Site{ID: s.ID, Name: s.Name, Kind: string(s.Kind)})
	}
	return out
}

// KnownMethods are the login methods every report has a column for, in
// the portal's order (sites.Methods); others seen in the data follow.
func KnownMethods() []string {
	out := make([]string, 0, len(sites.Methods))
	for _, m := range sites.Methods {
		out = append(out, string(m))
	}
	return out
}

// Row kinds of a report.
const (
	RowSite  = "site"  // one site over the report's month (town report)
	RowDay   = "day"   // one day of the site (site report)
	RowTotal = "total" // the town or the site over the month
)

// Row is one line of a report.
type Row struct {
	Row      string `json:"row"`    // RowSite, RowDay or RowTotal
	Period   string `json:"period"` // 2026-10 or 2026-10-01, in the town's zone
	Site     string `json:"site"`   // empty in the town's total
	SiteName string `json:"site_name"`
	Kind     string `json:"kind,omitempty"`
	Totals
}

// Report is the monthly report a town hands to its council: per site (the
// town's report) or per day (one site's), and the month's total.
type Report struct {
	Town     string    `json:"town"`
	Month    string    `json:"month"` // 2026-10
	Timezone string    `json:"timezone"`
	From     time.Time `json:"from"` // the month's start and end in the town's zone
	To       time.Time `json:"to"`
	Methods  []string  `json:"methods"` // the sessions_<method> columns, in order
	Rows     []Row     `json:"rows"`
	Total    Row       `json:"total"`
}

// TownReport is the month's report of the whole town: one row per site,
// and a total whose distinct users count each person once across sites.
func (e *Engine) TownReport(ctx context.Context, town string, ss []Site, month string) (Report, error) {
	from, to, err := e.MonthRange(month)
	if err != nil {
		return Report{}, err
	}
	if len(ss) == 0 {
		return Report{}, fmt.Errorf("%w: the town has no site", ErrInvalid)
	}
	ids := make([]string, len(ss))
	for i, s := range ss {
		ids[i] = s.ID
	}
	per, sum, err := e.BySite(ctx, ids, from, to)
	if err != nil {
		return Report{}, fmt.Errorf("reporting %s: %w", month, err)
	}
	r := e.newReport(town, month, from, to)
	var all []Totals
	for i, t := range per {
		r.Rows = append(r.Rows, Row{Row: RowSite, Period: month, Site: ss[i].ID, SiteName: ss[i].Name, Kind: ss[i].Kind, Totals: t.Totals})
		all = append(all, t.Totals)
	}
	r.Total = Row{Row: RowTotal, Period: month, SiteName: town, Totals: sum}
	r.Methods = MethodNames(KnownMethods(), append(all, sum)...)
	return r, nil
}

// SiteReport is one site's report for the month: one row per day and the
// month's total.
func (e *Engine) SiteReport(ctx context.Context, town string, s Site, month string) (Report, error) {
	from, to, err := e.MonthRange(month)
	if err != nil {
		return Report{}, err
	}
	pts, err := e.Series(ctx, []string{s.ID}, from, to, Day)
	if err != nil {
		return Report{}, fmt.Errorf("reporting %s of %s: %w", month, s.ID, err)
	}
	tot, err := e.Totals(ctx, []string{s.ID}, from, to)
	if err != nil {
		return Report{}, fmt.Errorf("reporting %s of %s: %w", month, s.ID, err)
	}
	r := e.newReport(town, month, from, to)
	all := []Totals{tot}
	for _, p := range pts {
		r.Rows = append(r.Rows, Row{Row: RowDay, Period: p.Start.Format("2006-01-02"), Site: s.ID, SiteName: s.Name, Kind: s.Kind, Totals: p.Totals})
		all = append(all, p.Totals)
	}
	r.Total = Row{Row: RowTotal, Period: month, Site: s.ID, SiteName: s.Name, Kind: s.Kind, Totals: tot}
	r.Methods = MethodNames(KnownMethods(), all...)
	return r, nil
}

func (e *Engine) newReport(town, month string, from, to time.Time) Report {
	return Report{Town: town, Month: month, Timezone: e.loc.String(), From: from, To: to}
}

// CSVColumns are a report's CSV columns, in order, for its methods:
//
//	row             site, day or total
//	period          2026-10 (a month) or 2026-10-01 (a day), in the town's zone
//	site            the site's id (empty in the town's total)
//	site_name       the site's name (the town's name in the town's total)
//	kind            park, library, museum, office, square
//	sessions        sessions started
//	distinct_users  distinct pseudonymous users who started a session (each person once per row)
//	user_days       sum over the days of each day's distinct users
//	online_minutes  session time, whole minutes (rounded)
//	bytes_down      bytes to the clients
//	bytes_up        bytes from the clients
//	sessions_<m>    sessions started with login method m, one column per method
//
// Every number is an integer (no decimal separator to misread in an
// Italian-locale spreadsheet).
func CSVColumns(methods []string) []string {
	out := []string{"row", "period", "site", "site_name", "kind", "sessions", "distinct_users", "user_days",
		"online_minutes", "bytes_down", "bytes_up"}
	for _, m := range methods {
		out = append(out, "sessions_"+m)
	}
	return out
}

// CSVOptions shape a CSV export.
type CSVOptions struct {
	// BOM starts the file with a UTF-8 byte order mark, so that Excel
	// reads the accented names as UTF-8 (LibreOffice does either way).
	// Strict RFC 4180 readers see it as part of the first header.
	BOM bool
}

// bom is the UTF-8 byte order mark.
const bom = "\ufeff"

// WriteCSV writes the report as RFC 4180 CSV: a header row (CSVColumns),
// the rows, then the total; CRLF line ends, fields with a comma, quote, CR
// or LF quoted (quotes doubled), UTF-8. Text that a spreadsheet would take
// for a formula (starting with = + - @ tab or CR) is prefixed with ' .
func (r Report) WriteCSV(w io.Writer, o CSVOptions) error {
	if o.BOM {
		if _, err := io.WriteString(w, bom); err != nil {
			return fmt.Errorf("writing the report: %w", err)
		}
	}
	cw := csv.NewWriter(w)
	cw.UseCRLF = true
	if err := cw.Write(CSVColumns(r.Methods)); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	for _, row := range append(r.Rows[:len(r.Rows):len(r.Rows)], r.Total) {
		if err := cw.Write(row.fields(r.Methods)); err != nil {
			return fmt.Errorf("writing the report: %w", err)
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	return nil
}

func (row Row) fields(methods []string) []string {
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	out := []string{row.Row, row.Period, Text(row.Site), Text(row.SiteName), Text(row.Kind),
		i(row.Sessions), i(int64(row.DistinctUsers)), i(row.UserDays), i(Minutes(row.OnlineMS)),
		i(row.BytesDown), i(row.BytesUp)}
	for _, m := range methods {
		out = append(out, i(row.Methods[m]))
	}
	return out
}

// Minutes rounds milliseconds to whole minutes (half up).
func Minutes(ms int64) int64 { return (ms + 30_000) / 60_000 }

// Text defuses a text field for spreadsheets: one that starts with = + - @
// tab or CR gets a leading ' (OWASP's advice against CSV injection).
func Text(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// WriteJSON writes the report as indented JSON (times in RFC 3339, online
// time in ms, every method under each row's "methods").
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	return nil
}
