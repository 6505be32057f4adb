package dashboard

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/login/voucher"
	"github.com/labstack/echo/v4"
)

type voucherForm struct {
	SiteID, SiteName string
	Count, Devices   int
	Minutes, Days    int
	DataMB           int
	Note             string
	Error            string
}

func (d *Dashboard) voucherPage(c echo.Context) error {
	if d.o.Vouchers == nil {
		return echo.NewHTTPError(http.StatusNotFound, "vouchers are not enabled on this controller")
	}
	s, err := d.site(c)
	if err != nil {
		return err
	}
	vf := voucherForm{SiteID: s.ID, SiteName: s.Name, Count: 30, Devices: max(1, s.Policy.Login.Voucher.Devices), Minutes: 120, Days: 30}
	return d.render(c, http.StatusOK, "vouchers", page{Title: "Vouchers " + s.Name, Session: sessionOf(c), Nav: "overview", Data: vf})
}

// createVouchers makes a batch for the site with voucher.Book (which keeps
// only the codes' keyed hashes and audits the batch) and answers with the
// printable sheet: the only time the codes exist in clear.
func (d *Dashboard) createVouchers(c echo.Context) error {
	if d.o.Vouchers == nil {
		return echo.NewHTTPError(http.StatusNotFound, "vouchers are not enabled on this controller")
	}
	s, err := d.site(c)
	if err != nil {
		return err
	}
	num := func(name string, lo, hi int) (int, error) {
		v, err := strconv.Atoi(strings.TrimSpace(c.FormValue(name)))
		if err != nil || v < lo || v > hi {
			return 0, fmt.Errorf("%s %q: give a whole number from %d to %d", name, c.FormValue(name), lo, hi)
		}
		return v, nil
	}
	vf := voucherForm{SiteID: s.ID, SiteName: s.Name, Note: c.FormValue("note")}
	var errs []string
	for _, f := range []struct {
		name   string
		lo, hi int
		dst    *int
	}{{"count", 1, voucher.MaxBatch, &vf.Count}, {"devices", 1, 10, &vf.Devices}, {"minutes", 1, 366 * 24 * 60, &vf.Minutes},
		{"days", 1, 731, &vf.Days}, {"data_mb", 0, 1 << 30, &vf.DataMB}} {
		v, err := num(f.name, f.lo, f.hi)
		if err != nil {
			errs = append(errs, err.Error())
		}
		*f.dst = v
	}
	if len(errs) > 0 {
		vf.Error = strings.Join(errs, "; ")
		return d.render(c, http.StatusBadRequest, "vouchers", page{Title: "Vouchers " + s.Name, Session: sessionOf(c), Nav: "overview", Data: vf})
	}
	now := d.o.Now()
	spec := voucher.Spec{Site: s.ID, Duration: time.Duration(vf.Minutes) * time.Minute, DataBytes: uint64(vf.DataMB) * 1_000_000,
		Devices: vf.Devices, ValidUntil: now.AddDate(0, 0, vf.Days), Note: vf.Note}
	batch, codes, err := d.o.Vouchers.Create(c.Request().Context(), spec, vf.Count, sessionOf(c).User)
	if err != nil {
		vf.Error = err.Error()
		return d.render(c, http.StatusBadRequest, "vouchers", page{Title: "Vouchers " + s.Name, Session: sessionOf(c), Nav: "overview", Data: vf})
	}
	var b bytes.Buffer
	portal := "http://" + s.ClientNetwork.Gateway.String()
	if err := voucher.WriteSheet(&b, voucher.SheetInfo{Town: d.o.Sites().Town.Name, Where: s.Name, Batch: batch, Portal: portal, Location: d.loc()}, codes); err != nil {
		return err
	}
	// The sheet is voucher's own page, with its inline print styles and QR images.
	c.Response().Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'")
	return c.HTMLBlob(http.StatusOK, b.Bytes())
}
