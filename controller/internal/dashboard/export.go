package dashboard

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"regexp"

	"github.com/civicwifi/civicwifi/controller/internal/stats"
	"github.com/labstack/echo/v4"
)

var monthRE = regexp.MustCompile(`^\d{4}-\d{2}$`)

// export serves the monthly report (package stats: the town's or one
// site's, RFC 4180 CSV with a BOM for spreadsheets, or JSON) to the roles
// with Exports (IT staff, auditors), and audits the download.
func (d *Dashboard) export(c echo.Context) error {
	month, site, format := c.QueryParam("month"), c.QueryParam("site"), c.QueryParam("format")
	if !monthRE.MatchString(month) {
		return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("month %q: give YYYY-MM, e.g. 2026-10", month))
	}
	if format != "csv" && format != "json" {
		return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("format %q: csv or json", format))
	}
	cfg := d.o.Sites()
	eng := stats.New(d.o.Store, d.loc())
	var rep stats.Report
	var err error
	name := "civicwifi-" + month
	if site == "" {
		rep, err = eng.TownReport(c.Request().Context(), cfg.Town.Name, stats.SitesOf(cfg), month)
	} else {
		s := cfg.Site(site)
		if s == nil {
			return echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("no site %q in sites.yaml", site))
		}
		name += "-" + s.ID
		rep, err = eng.SiteReport(c.Request().Context(), cfg.Town.Name, stats.Site{ID: s.ID, Name: s.Name, Kind: string(s.Kind)}, month)
	}
	if errors.Is(err, stats.ErrInvalid) {
		return echo.NewHTTPError(http.StatusBadRequest, err.Error())
	}
	if err != nil {
		return err
	}
	var b bytes.Buffer
	ctype := "text/csv; charset=utf-8; header=present"
	if format == "json" {
		ctype = "application/json"
		err = rep.WriteJSON(&b)
	} else {
		err = rep.WriteCSV(&b, stats.CSVOptions{BOM: true})
	}
	if err != nil {
		return err
	}
	target := site
	if target == "" {
		target = "town"
	}
	d.audit(c.Request().Context(), sessionOf(c).User, "report.export", target, month+" "+format)
	c.Response().Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s.%s"`, name, format))
	return c.Blob(http.StatusOK, ctype, b.Bytes())
}
