package captive

import (
	"net/http"
	"strconv"
)

// Probe is one operating system's connectivity check: what it asks for and
// the exact answer that makes it say "connected". Before login the portal
// answers a probe with a redirect instead, which the OS reads as "captive"
// and opens its login window for.
type Probe struct {
	OS          string
	Host        string
	Path        string // "" matches every path on Host
	Status      int
	ContentType string
	Body        string
}

// The answers are those of the real services (checked against their public
// sources): Apple's Success page, which captive.apple.com ends with a
// newline; Google's empty 204; Microsoft's NCSI texts without a newline;
// Firefox's canonical page exactly as its captivedetect.canonicalContent pref
// and its success.txt; NetworkManager's check_network_status.txt.
const (
	appleSuccess    = "<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>\n"
	firefoxCanon    = `<meta http-equiv="refresh" content="0;url=https://support.mozilla.org/kb/captive-portal"/>`
	textPlain       = "text/plain; charset=utf-8"
	textHTML        = "text/html; charset=utf-8"
	nmOnline        = "NetworkManager is online\n"
	msConnectTest   = "Microsoft Connect Test"
	msNCSI          = "Microsoft NCSI"
	firefoxSuccess  = "success\n"
	generate204Path = "/generate_204"
)

// Probes lists every probe the portal answers, for the lab's replay tests.
func Probes() []Probe {
	return []Probe{
		{"Apple", "captive.apple.com", "", http.StatusOK, textHTML, appleSuccess},
		{"Apple", "www.apple.com", "/library/test/success.html", http.StatusOK, textHTML, appleSuccess},
		{"Android", "connectivitycheck.gstatic.com", generate204Path, http.StatusNoContent, "", ""},
		{"Android", "www.gstatic.com", generate204Path, http.StatusNoContent, "", ""},
		{"Android", "clients3.google.com", generate204Path, http.StatusNoContent, "", ""},
		{"Android", "connectivitycheck.android.com", generate204Path, http.StatusNoContent, "", ""},
		{"Android", "www.google.com", "/gen_204", http.StatusNoContent, "", ""},
		{"Windows", "www.msftconnecttest.com", "/connecttest.txt", http.StatusOK, textPlain, msConnectTest},
		{"Windows", "www.msftncsi.com", "/ncsi.txt", http.StatusOK, textPlain, msNCSI},
		{"Firefox", "detectportal.firefox.com", "/canonical.html", http.StatusOK, textHTML, firefoxCanon},
		{"Firefox", "detectportal.firefox.com", "/success.txt", http.StatusOK, textPlain, firefoxSuccess},
		{"NetworkManager", "nmcheck.gnome.org", "/check_network_status.txt", http.StatusOK, textPlain, nmOnline},
	}
}

// answer is a probe's prepared response: header values and body built once.
type answer struct {
	status int
	ctype  []string
	length []string
	body   []byte
}

// probeTable finds a probe by host, then path, without allocating.
type probeTable map[string]map[string]*answer

func newProbeTable() probeTable {
	t := probeTable{}
	for _, p := range Probes() {
		a := &answer{status: p.Status, body: []byte(p.Body)}
		if p.Status != http.StatusNoContent {
			a.length = []string{strconv.Itoa(len(p.Body))}
		}
		if p.ContentType != "" {
			a.ctype = []string{p.ContentType}
		}
		if t[p.Host] == nil {
			t[p.Host] = map[string]*answer{}
		}
		t[p.Host][p.Path] = a
	}
	return t
}

func (t probeTable) lookup(host, path string) *answer {
	paths := t[host]
	if paths == nil {
		return nil
	}
	if a := paths[path]; a != nil {
		return a
	}
	return paths[""]
}

func (a *answer) write(w http.ResponseWriter) {
	h := w.Header()
	if a.ctype != nil {
		h["Content-Type"] = a.ctype
	}
	if a.length != nil {
		h["Content-Length"] = a.length
	}
	h["Cache-Control"] = noStore
	w.WriteHeader(a.status)
	if len(a.body) > 0 {
		w.Write(a.body)
	}
}
