package voucher

import (
	"encoding/base64"
	"fmt"
	"html/template"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	qrcode "github.com/skip2/go-qrcode"
)

// PortalURL returns the address a voucher's QR code opens: base (the portal, e.g. "http://10.20.0.1") +
// "/portal/?voucher=" + the code.
func PortalURL(base, code string) string {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		u = &url.URL{Scheme: "http", Host: base}
	}
	u.Path = "/portal/"
	u.RawQuery = url.Values{"voucher": {code}}.Encode()
	return u.String()
}

// SheetInfo is what a printed sheet says besides the codes.
type SheetInfo struct {
	Town     string
	Where    string // the site's name, or "all sites"
	Batch    Batch
	Portal   string // base URL for PortalURL
	Location *time.Location
}

type sheetCard struct {
	Code string
	URL  string
	QR   template.URL // data: URI of a PNG
}

var sheetTmpl = template.Must(template.New("sheet").Parse(`<!doctype html>
<html lang="it"><head><meta charset="utf-8">
<title>Voucher Wi-Fi {{.Info.Town}} – {{.Info.Batch.ID}}</title>
<style>
body{font-family:sans-serif;margin:1cm}
.cards{display:grid;grid-template-columns:repeat(3,1fr);gap:4mm}
.card{border:1px dashed #888;padding:4mm;text-align:center;break-inside:avoid;page-break-inside:avoid}
.code{font-family:monospace;font-size:18pt;letter-spacing:1px;margin:2mm 0}
.card img{width:32mm;height:32mm}
.small{font-size:8pt;color:#333}
@media print{h1,.meta{display:none}}
</style></head><body>
<h1>Voucher Wi-Fi – {{.Info.Town}}</h1>
<p class="meta">Lotto {{.Info.Batch.ID}} · {{.Info.Where}} · {{.Info.Batch.Count}} voucher · creato {{.Created}}</p>
<div class="cards">
{{range .Cards}}<div class="card">
<div class="small">Wi-Fi {{$.Info.Town}} – {{$.Info.Where}}</div>
<img src="{{.QR}}" alt="QR">
<div class="code">{{.Code}}</div>
<div class="small">{{.URL}}</div>
<div class="small">{{$.Terms}}<br>Valido fino al {{$.ValidUntil}}</div>
</div>
{{end}}</div></body></html>
`))

// WriteSheet writes a printable HTML page with one card per code: the code, what it gives, and a QR code that
// opens the portal with the code filled in.
func WriteSheet(w io.Writer, info SheetInfo, codes []string) error {
	loc := info.Location
	if loc == nil {
		loc = time.Local
	}
	cards := make([]sheetCard, 0, len(codes))
	for _, c := range codes {
		u := PortalURL(info.Portal, c)
		png, err := qrcode.Encode(u, qrcode.Medium, 256)
		if err != nil {
			return fmt.Errorf("making the QR code of %s: %w", c, err)
		}
		cards = append(cards, sheetCard{Code: c, URL: u, QR: template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png))})
	}
	s := info.Batch.Spec
	terms := "Accesso per " + italianDuration(s.Duration) + " dal primo uso"
	if s.Devices > 1 {
		terms += fmt.Sprintf(", %d dispositivi", s.Devices)
	}
	if s.DataBytes > 0 {
		terms += ", " + dataSize(s.DataBytes)
	}
	return sheetTmpl.Execute(w, map[string]any{
		"Info": info, "Cards": cards, "Terms": terms,
		"Created":    info.Batch.Created.In(loc).Format("02/01/2006 15:04"),
		"ValidUntil": s.ValidUntil.In(loc).Format("02/01/2006"),
	})
}

// italianDuration writes d as a person would: "4 ore", "1 giorno", "90 minuti".
func italianDuration(d time.Duration) string {
	unit := func(n int64, one, many string) string {
		if n == 1 {
			return "1 " + one
		}
		return fmt.Sprintf("%d %s", n, many)
	}
	switch {
	case d%(24*time.Hour) == 0:
		return unit(int64(d/(24*time.Hour)), "giorno", "giorni")
	case d%time.Hour == 0:
		return unit(int64(d/time.Hour), "ora", "ore")
	default:
		return unit(int64(d.Round(time.Minute)/time.Minute), "minuto", "minuti")
	}
}

// dataSize writes n bytes in the decimal units people read on a phone plan: "2 GB", "500 MB", "1,5 GB".
func dataSize(n uint64) string {
	switch {
	case n >= 1e9:
		return strings.Replace(strconv.FormatFloat(float64((n+50_000_000)/100_000_000)/10, 'f', -1, 64), ".", ",", 1) + " GB"
	case n >= 1e6:
		return strconv.FormatUint((n+500_000)/1e6, 10) + " MB"
	}
	return strconv.FormatUint(n, 10) + " byte"
}
