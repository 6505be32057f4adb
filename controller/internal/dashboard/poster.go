package dashboard

import (
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"strings"

	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/labstack/echo/v4"
	qrcode "github.com/skip2/go-qrcode"
)

type posterData struct {
	Site    *sites.Site
	Town    sites.Town
	QR      template.URL // data:image/png;base64,...
	QRText  string
	Methods []string
}

// wifiQR is the text of a QR code that joins an open network (the WIFI:
// scheme phone cameras read; \ ; , : and " escaped, an all-hex SSID
// quoted). The portal's poster (portal/internal/captive) writes the same;
// Go's internal rule keeps the controller from importing it.
func wifiQR(ssid string) string {
	var b strings.Builder
	b.WriteString("WIFI:S:")
	hex := ssid != ""
	for _, r := range ssid {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			hex = false
		}
	}
	if hex {
		b.WriteByte('"')
	}
	for _, r := range ssid {
		if strings.ContainsRune(`\;,:"`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	if hex {
		b.WriteByte('"')
	}
	b.WriteString(";T:nopass;;")
	return b.String()
}

// poster is a printable A4 page for a site: its SSID, a QR code that joins
// the network, how to log in, and who runs it. Showing it is audited.
func (d *Dashboard) poster(c echo.Context) error {
	s, err := d.site(c)
	if err != nil {
		return err
	}
	text := wifiQR(s.SSID)
	png, err := qrcode.Encode(text, qrcode.Medium, 512)
	if err != nil {
		return fmt.Errorf("drawing the QR code: %w", err)
	}
	pd := posterData{Site: s, Town: d.o.Sites().Town, QRText: text,
		QR: template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png))}
	for _, m := range s.Policy.Login.Methods {
		pd.Methods = append(pd.Methods, map[sites.Method]string{
			sites.ClickThrough: "accept the terms with one tap", sites.SMS: "a code by SMS",
			sites.SPID: "SPID, the Italian digital identity", sites.Voucher: "a voucher from the staff",
		}[m])
	}
	d.audit(c.Request().Context(), sessionOf(c).User, "poster.show", s.ID, "")
	return d.render(c, http.StatusOK, "poster", page{Title: "Poster " + s.Name, Session: sessionOf(c), Data: pd})
}
