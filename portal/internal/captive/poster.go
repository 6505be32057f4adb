package captive

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io"
	"strings"

	qrcode "github.com/skip2/go-qrcode"
)

// PosterConfig is what the site poster shows.
type PosterConfig struct {
	SSID     string
	SiteName string
	Town     string
}

// WiFiQR is the text of a QR code that joins an open network: the
// WIFI: URI scheme that phone cameras read (ZXing's and the Wi-Fi
// Alliance's format), with \ ; , : and " escaped by a backslash. An SSID
// made only of hex digits is quoted, so that readers do not take it for
// hex-encoded bytes.
func WiFiQR(ssid string) string {
	var b strings.Builder
	b.WriteString("WIFI:S:")
	quote := isHex(ssid)
	if quote {
		b.WriteByte('"')
	}
	for _, r := range ssid {
		switch r {
		case '\\', ';', ',', ':', '"':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	if quote {
		b.WriteByte('"')
	}
	b.WriteString(";T:nopass;;")
	return b.String()
}

func isHex(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// PosterPNG is the join-the-network QR code as a PNG image.
func PosterPNG(ssid string, size int) ([]byte, error) {
	png, err := qrcode.Encode(WiFiQR(ssid), qrcode.Medium, size)
	if err != nil {
		return nil, fmt.Errorf("making the QR code: %w", err)
	}
	return png, nil
}

var posterTmpl = template.Must(template.New("poster").Parse(`<!doctype html>
<html lang="it">
<head>
<meta charset="utf-8">
<title>{{.Site}} – {{.IT.T "poster.title"}}</title>
<style>
@page{size:A4;margin:15mm}
body{font-family:"Titillium Web",-apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#1a1a1a;margin:0;text-align:center}
header{background:#0066cc;color:#fff;padding:8mm 5mm;-webkit-print-color-adjust:exact;print-color-adjust:exact}
header p{margin:0;font-size:14pt}
h1{margin:2mm 0 0;font-size:30pt}
.qr{width:90mm;height:90mm;margin:8mm auto 2mm;display:block;image-rendering:pixelated}
.ssid{font-size:20pt;font-weight:700;margin:0 0 6mm}
.cols{display:flex;gap:8mm;text-align:left;font-size:13pt}
.cols section{flex:1}
h2{font-size:16pt;margin:0 0 2mm;color:#0066cc}
ol{padding-left:6mm;margin:0}
li{margin-bottom:2mm}
</style>
</head>
<body>
<header>{{if .Town}}<p>{{.Town}}</p>{{end}}<h1>{{.IT.T "poster.title"}} · {{.Site}}</h1><p lang="en">{{.EN.T "poster.title"}}</p></header>
<img class="qr" src="data:image/png;base64,{{.QR}}" alt="{{.IT.T "poster.network" .SSID}}">
<p class="ssid">{{.IT.T "poster.network" .SSID}} · <span lang="en">{{.EN.T "poster.network" .SSID}}</span></p>
<div class="cols">
<section lang="it"><h2>Italiano</h2><ol><li>{{.IT.T "poster.step1" .SSID}}</li><li>{{.IT.T "poster.step2"}}</li><li>{{.IT.T "poster.step3"}}</li></ol></section>
<section lang="en"><h2>English</h2><ol><li>{{.EN.T "poster.step1" .SSID}}</li><li>{{.EN.T "poster.step2"}}</li><li>{{.EN.T "poster.step3"}}</li></ol></section>
</div>
</body>
</html>
`))

// WritePoster writes the site's printable poster: a standalone HTML page
// (the QR code inline) with a short how-to in Italian and English. It is
// made on the management side (portal poster > poster.html), never served
// to residents.
func WritePoster(w io.Writer, p PosterConfig) error {
	if p.SSID == "" {
		return errors.New("the poster needs the network's name: set portal.ssid in portal.yaml")
	}
	png, err := PosterPNG(p.SSID, 512)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	// The data URI is trusted here: html/template would otherwise refuse
	// a data: URL in src.
	err = posterTmpl.Execute(&buf, map[string]any{
		"Site": p.SiteName, "Town": p.Town, "SSID": p.SSID,
		"QR": template.URL(base64.StdEncoding.EncodeToString(png)),
		"IT": langByCode("it").cat, "EN": langByCode("en").cat,
	})
	if err != nil {
		return fmt.Errorf("rendering the poster: %w", err)
	}
	_, err = w.Write(buf.Bytes())
	return err
}
