package captive

import (
	"embed"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"golang.org/x/text/language"
)

// Every string a resident reads is in a catalogue, one JSON file per
// language under catalog/; templates only name keys. A test checks that
// every key exists in every language and every key used exists.
//
//go:embed catalog/*.json
var catalogFS embed.FS

// Lang is one language the pages are offered in.
type Lang struct {
	Code string // it, en, de, fr
	Name string // in its own language, for the switch
	tag  language.Tag
	cat  Catalog
}

// Catalog maps a message key to its text (a fmt format when it takes
// arguments).
type Catalog map[string]string

// T returns the message for key, formatted with args. A missing key shows
// as itself in brackets (the catalogue test keeps that from shipping).
func (c Catalog) T(key string, args ...any) string {
	s, ok := c[key]
	if !ok {
		return "[" + key + "]"
	}
	if len(args) > 0 {
		return fmt.Sprintf(s, args...)
	}
	return s
}

// langs are offered in this order; the first is the default.
var langs = mustLoadLangs(
	[]string{"it", "en", "de", "fr"},
	[]string{"Italiano", "English", "Deutsch", "Français"},
)

var matcher = func() language.Matcher {
	tags := make([]language.Tag, len(langs))
	for i, l := range langs {
		tags[i] = l.tag
	}
	return language.NewMatcher(tags)
}()

func mustLoadLangs(codes, names []string) []*Lang {
	out := make([]*Lang, len(codes))
	for i, code := range codes {
		b, err := catalogFS.ReadFile("catalog/" + code + ".json")
		if err != nil {
			panic(err)
		}
		var c Catalog
		if err := json.Unmarshal(b, &c); err != nil {
			panic(fmt.Sprintf("catalog/%s.json: %v", code, err))
		}
		out[i] = &Lang{Code: code, Name: names[i], tag: language.MustParse(code), cat: c}
	}
	return out
}

func langByCode(code string) *Lang {
	for _, l := range langs {
		if l.Code == code {
			return l
		}
	}
	return nil
}

// errBadLang is a lang parameter that names no offered language.
type errBadLang struct{ code string }

func (e errBadLang) Error() string { return fmt.Sprintf("language %q is not offered", e.code) }

// pickLang chooses the page's language: an explicit choice (the switch's
// links and the forms carry it) or the phone's Accept-Language, else
// Italian. A choice naming no offered language is an error (400), not a
// silent fallback.
func pickLang(r *http.Request, explicit string) (*Lang, error) {
	if explicit != "" {
		if l := langByCode(explicit); l != nil {
			return l, nil
		}
		return acceptLang(r), errBadLang{code: explicit}
	}
	return acceptLang(r), nil
}

func acceptLang(r *http.Request) *Lang {
	al := r.Header.Get("Accept-Language")
	if al == "" || len(al) > 256 {
		return langs[0]
	}
	tags, _, err := language.ParseAcceptLanguage(al)
	if err != nil || len(tags) == 0 {
		return langs[0]
	}
	_, i, conf := matcher.Match(tags...)
	if conf == language.No {
		return langs[0]
	}
	return langs[i]
}

// quickLang is acceptLang for the hot paths (the 429 page): the first
// two-letter code that is offered, without parsing weights.
func quickLang(r *http.Request) *Lang {
	al := r.Header.Get("Accept-Language")
	for len(al) >= 2 {
		if l := langByCode(strings.ToLower(al[:2])); l != nil {
			return l
		}
		i := strings.IndexByte(al, ',')
		if i < 0 {
			break
		}
		al = strings.TrimLeft(al[i+1:], " ")
	}
	return langs[0]
}
