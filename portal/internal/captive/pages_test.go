package captive

import (
	"bytes"
	"flag"
	"image/png"
	"io/fs"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// Every key is in every language, every key a template or the code uses
// exists, and no catalogue carries a key nobody uses.
func TestCatalogues(t *testing.T) {
	used := map[string]bool{}
	keyRE := regexp.MustCompile(`\.T "([a-z0-9_.]+)"`)
	codeRE := regexp.MustCompile(`T\("([a-z0-9_.]+)"|key: "([a-z0-9_.]+)"|"(landing\.must_accept|error\.[a-z]+|login\.err\.other)"`)
	fs.WalkDir(templateFS, "templates", func(p string, d fs.DirEntry, err error) error {
		if d.IsDir() {
			return nil
		}
		b, _ := templateFS.ReadFile(p)
		for _, m := range keyRE.FindAllStringSubmatch(string(b), -1) {
			used[m[1]] = true
		}
		return nil
	})
	for _, code := range LoginCodes {
		used["login.err."+code] = true
	}
	for _, f := range []string{"pages.go", "poster.go", "login.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range codeRE.FindAllStringSubmatch(string(b), -1) {
			for _, k := range m[1:] {
				if k != "" && k != "error.other" {
					used[k] = true
				}
			}
		}
		for _, m := range keyRE.FindAllStringSubmatch(string(b), -1) {
			used[m[1]] = true
		}
	}
	for _, code := range errorCodes {
		used["error."+strconv.Itoa(code)+".title"], used["error."+strconv.Itoa(code)+".text"] = true, true
	}
	used["error.other.title"], used["error.other.text"] = true, true
	if len(used) < 60 {
		t.Fatalf("found only %d keys in use: the scan is broken", len(used))
	}
	ref := langs[0].cat
	for _, l := range langs {
		for k := range used {
			if strings.TrimSpace(l.cat[k]) == "" {
				t.Errorf("%s: key %q used but missing", l.Code, k)
			}
		}
		for k := range l.cat {
			if !used[k] {
				t.Errorf("%s: key %q is not used", l.Code, k)
			}
			if _, ok := ref[k]; !ok {
				t.Errorf("%s: key %q is not in it.json", l.Code, k)
			}
			if strings.Count(l.cat[k], "%") != strings.Count(ref[k], "%") {
				t.Errorf("%s: %q has other format verbs than Italian: %q vs %q", l.Code, k, l.cat[k], ref[k])
			}
		}
		if len(l.cat) != len(ref) {
			t.Errorf("%s has %d keys, it has %d", l.Code, len(l.cat), len(ref))
		}
	}
}

// pageCases are the pages a resident can see, for the size and golden
// tests.
func pageCases(t *testing.T) map[string]func(tp *testPortal) (int, []byte) {
	u := "http://www.example.it/news?id=1"
	return map[string]func(tp *testPortal) (int, []byte){
		"landing": func(tp *testPortal) (int, []byte) {
			w := tp.do(req{target: "/portal/?url=" + url.QueryEscape(u) + "&sig=" + tp.s.sign.urlSig(u), host: portal})
			return w.Code, w.Body.Bytes()
		},
		"status": func(tp *testPortal) (int, []byte) {
			tp.login(phone)
			defer delete(tp.gate.sessions, netip.MustParseAddr(phone))
			w := tp.do(req{target: "/portal/status", host: portal})
			return w.Code, w.Body.Bytes()
		},
		"loggedout": func(tp *testPortal) (int, []byte) {
			w := tp.do(req{method: "POST", target: "/portal/logout", host: portal, form: url.Values{"csrf": {tp.s.sign.csrf(netip.MustParseAddr(phone), tp.now)}}})
			return w.Code, w.Body.Bytes()
		},
		"info": func(tp *testPortal) (int, []byte) {
			w := tp.do(req{target: "/portal/info", host: portal})
			return w.Code, w.Body.Bytes()
		},
		"error-404": func(tp *testPortal) (int, []byte) {
			w := tp.do(req{target: "/portal/nope", host: portal})
			return w.Code, w.Body.Bytes()
		},
	}
}

// Golden pages per language (rewrite with -update; the status is checked
// on its own so an update cannot hide a regression). The CSRF token
// depends on the key and time, both fixed here.
func TestGoldenPages(t *testing.T) {
	wantCode := map[string]int{"landing": 200, "status": 200, "loggedout": 200, "info": 200, "error-404": 404}
	for name, get := range pageCases(t) {
		for _, l := range langs {
			t.Run(name+"/"+l.Code, func(t *testing.T) {
				tp := newTestPortal(t)
				code, body := withLang(tp, l.Code, get)
				if code != wantCode[name] {
					t.Fatalf("status %d, want %d", code, wantCode[name])
				}
				golden := filepath.Join("testdata", name+"."+l.Code+".html")
				if *update {
					os.MkdirAll("testdata", 0o755)
					if err := os.WriteFile(golden, body, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run with -update)", err)
				}
				if diff := cmp.Diff(string(want), string(body)); diff != "" {
					t.Errorf("%s (-want +got)\n%s", golden, diff)
				}
			})
		}
	}
}

// withLang runs get with the phone asking for lang.
func withLang(tp *testPortal, lang string, get func(*testPortal) (int, []byte)) (int, []byte) {
	tp.lang = lang
	defer func() { tp.lang = "" }()
	return get(tp)
}

// Every page, with its style sheet and the largest allowed logo, stays
// under 100 KB, and each names its language and needs nothing from
// elsewhere.
func TestPageBudget(t *testing.T) {
	logo := bytes.Repeat([]byte{'x'}, maxLogo)
	tp := newTestPortal(t, func(c *Config) { c.Logo, c.LogoType = logo, "image/png" })
	for name, get := range pageCases(t) {
		for _, l := range langs {
			code, body := withLang(tp, l.Code, get)
			if code >= 500 {
				t.Fatalf("%s/%s: %d", name, l.Code, code)
			}
			total := len(body) + len(portalCSS) + len(logo)
			if total > 100<<10 {
				t.Errorf("%s/%s: %d bytes with its assets, over 100 KB", name, l.Code, total)
			}
			b := string(body)
			if !strings.Contains(b, `<html lang="`+l.Code+`">`) {
				t.Errorf("%s/%s: no lang attribute", name, l.Code)
			}
			for _, bad := range []string{"<script", "http://", "https://", "javascript:", "target=\"_blank\"", "onclick", "style=\""} {
				if strings.Contains(b, bad) && !(bad == "http://" && name == "landing") {
					t.Errorf("%s/%s: page contains %q", name, l.Code, bad)
				}
			}
			if !strings.Contains(b, `class="skip" href="#main"`) || !strings.Contains(b, `<img src="/portal/logo"`) {
				t.Errorf("%s/%s: no skip link or logo", name, l.Code)
			}
		}
	}
	w := tp.do(req{target: "/portal/logo", host: portal})
	if w.Code != 200 || w.Header().Get("Content-Type") != "image/png" || w.Body.Len() != maxLogo {
		t.Errorf("logo: %d %q %d bytes", w.Code, w.Header().Get("Content-Type"), w.Body.Len())
	}
	w = tp.do(req{target: "/portal/static/portal.css", host: portal})
	if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), portalCSS) || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/css") {
		t.Errorf("style sheet: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
}

// Every form field has a label, and the forms for the login issue carry
// the attributes phones need to fill them in.
func TestFormComponents(t *testing.T) {
	tp := newTestPortal(t)
	d := tp.s.pages.base(langs[1], "/portal/", nil)
	d.CSRF = "tok"
	d.IdPs = []IdP{{EntityID: "https://idp.example.it", Name: "Example ID"}}
	d.SMS = &smsFields{RID: "r1", Phone: "+393331234567", Masked: "… 567", State: "st", ResendWait: 30}
	var buf bytes.Buffer
	for _, name := range []string{"method-click", "method-remembered", "method-sms", "method-voucher", "method-spid"} {
		if err := tp.s.pages.tmpl["landing"].ExecuteTemplate(&buf, name, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := tp.s.pages.tmpl["code"].ExecuteTemplate(&buf, "content", d); err != nil {
		t.Fatal(err)
	}
	b := buf.String()
	for _, want := range []string{
		`<input type="tel" id="phone" name="phone" autocomplete="tel"`,
		`autocomplete="one-time-code" inputmode="numeric" pattern="[0-9]{6}"`,
		`inputmode="tel"`,
		`<label for="voucher">Voucher code</label>`,
		`<label for="accept-voucher">`,
		`<label for="accept-spid">`,
		`<button type="submit" class="btn secondary idp" name="idp" value="https://idp.example.it">Example ID</button>`,
		`You can ask for a new code in 30 seconds.`,
		`<label for="phone">Mobile phone number</label>`,
		`<label for="code">Code received</label>`,
		`<button type="submit" class="btn" name="accept" value="1" aria-describedby="consent-click">Accept and connect</button>`,
		`<label for="accept-sms">`,
		`name="csrf" value="tok"`,
	} {
		if !strings.Contains(b, want) {
			t.Errorf("forms lack %q", want)
		}
	}
	ids := regexp.MustCompile(`<input type="(?:text|tel|checkbox)" id="([^"]+)"`).FindAllStringSubmatch(b, -1)
	if len(ids) != 6 {
		t.Fatalf("found %d visible inputs, want 6", len(ids))
	}
	for _, m := range ids {
		if !strings.Contains(b, `<label for="`+m[1]+`">`) {
			t.Errorf("input %s has no label", m[1])
		}
	}
}

// Colour pairs in the style sheet meet WCAG AA (4.5:1 for text).
func TestContrast(t *testing.T) {
	for _, p := range [][2]string{
		{"#0066cc", "#ffffff"}, {"#ffffff", "#0066cc"}, {"#ffffff", "#004d99"}, {"#1a1a1a", "#f2f4f7"},
		{"#5c6f82", "#ffffff"}, {"#ffffff", "#1a1a1a"}, {"#1a1a1a", "#fbe9eb"},
	} {
		if r := contrast(p[0], p[1]); r < 4.5 {
			t.Errorf("%s on %s: %.2f:1, under 4.5:1", p[0], p[1], r)
		}
		for _, c := range p {
			if !strings.Contains(string(portalCSS), c) && !(c == "#ffffff" && strings.Contains(string(portalCSS), "#fff")) {
				t.Errorf("%s is not in the style sheet: the test checks stale colours", c)
			}
		}
	}
}

func contrast(a, b string) float64 {
	l1, l2 := luminance(a), luminance(b)
	if l1 < l2 {
		l1, l2 = l2, l1
	}
	return (l1 + 0.05) / (l2 + 0.05)
}

func luminance(hex string) float64 {
	var c [3]float64
	for i := range 3 {
		var v int
		for _, ch := range hex[1+2*i : 3+2*i] {
			v = v*16 + strings.IndexRune("0123456789abcdef", ch)
		}
		s := float64(v) / 255
		if s <= 0.03928 {
			c[i] = s / 12.92
		} else {
			c[i] = math.Pow((s+0.055)/1.055, 2.4)
		}
	}
	return 0.2126*c[0] + 0.7152*c[1] + 0.0722*c[2]
}

func TestWiFiQR(t *testing.T) {
	for _, tc := range []struct{ ssid, want string }{
		{"Voghera Free WiFi", "WIFI:S:Voghera Free WiFi;T:nopass;;"},
		{`a;b,c:d\e"f`, `WIFI:S:a\;b\,c\:d\\e\"f;T:nopass;;`},
		{"Caffè Città", "WIFI:S:Caffè Città;T:nopass;;"},
		{"CAFE01", `WIFI:S:"CAFE01";T:nopass;;`},
		{"12345", `WIFI:S:"12345";T:nopass;;`},
		{"x;", `WIFI:S:x\;;T:nopass;;`},
	} {
		if got := WiFiQR(tc.ssid); got != tc.want {
			t.Errorf("WiFiQR(%q) = %q, want %q", tc.ssid, got, tc.want)
		}
	}
}

func TestPoster(t *testing.T) {
	b, err := PosterPNG("Voghera Free WiFi", 512)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if r := img.Bounds(); r.Dx() != 512 || r.Dy() != 512 {
		t.Errorf("QR image %v, want 512x512", r)
	}
	// Dark and light modules both present (a blank image decodes too).
	dark, light := 0, 0
	for y := 0; y < 512; y += 4 {
		for x := 0; x < 512; x += 4 {
			if r, _, _, _ := img.At(x, y).RGBA(); r < 0x8000 {
				dark++
			} else {
				light++
			}
		}
	}
	if dark < 1000 || light < 1000 {
		t.Errorf("QR image has %d dark and %d light samples", dark, light)
	}
	var buf bytes.Buffer
	if err := WritePoster(&buf, PosterConfig{SSID: "Voghera Free WiFi", SiteName: "Parco Pertini", Town: "Comune di Voghera"}); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	for _, want := range []string{"Rete: Voghera Free WiFi", "Network: Voghera Free WiFi", "Inquadra il codice QR", "Scan the QR code", "Comune di Voghera", `src="data:image/png;base64,iVBOR`} {
		if !strings.Contains(page, want) {
			t.Errorf("poster lacks %q", want)
		}
	}
	if err := WritePoster(&buf, PosterConfig{}); err == nil || !strings.Contains(err.Error(), "portal.ssid") {
		t.Errorf("poster without SSID: %v", err)
	}
}

// The poster is not a route: residents cannot fetch it.
func TestPosterNotServed(t *testing.T) {
	tp := newTestPortal(t)
	for _, p := range []string{"/portal/poster", "/poster", "/portal/poster.html"} {
		if w := tp.do(req{target: p, host: portal}); w.Code != http.StatusNotFound {
			t.Errorf("%s: %d", p, w.Code)
		}
	}
}

// A cached landing page is byte for byte what the template makes with the
// client's own token, for any original URL.
func TestLandingCache(t *testing.T) {
	tp := newTestPortal(t)
	ip := netip.MustParseAddr(phone)
	for _, target := range []string{"", "http://captive.apple.com/hotspot-detect.html", `http://a.example/?q="<x>'&y=1+2`, "http://b.example/caffè%20città"} {
		for round := range 2 { // a miss, then a hit
			for _, l := range langs {
				q := "/portal/?lang=" + l.Code
				sig := ""
				if target != "" {
					sig = tp.s.sign.urlSig(target)
					q += "&url=" + url.QueryEscape(target) + "&sig=" + sig
				}
				w := tp.do(req{target: q, host: portal})
				want, err := tp.s.pages.landing(l, target, sig, "", tp.s.sign.csrf(ip, tp.now))
				if err != nil {
					t.Fatal(err)
				}
				if w.Code != 200 {
					t.Fatalf("%d", w.Code)
				}
				if diff := cmp.Diff(string(want), w.Body.String()); diff != "" {
					t.Errorf("%s %q round %d (-want +got)\n%s", l.Code, target, round, diff)
				}
				if strings.Contains(w.Body.String(), csrfMark) {
					t.Error("the placeholder reached the page")
				}
			}
		}
	}
	if n := len(tp.s.pages.landings); n != 16 {
		t.Errorf("%d cached landing pages, want 16", n)
	}
}
