package dashboard

import (
	"fmt"
	"html/template"
	"math"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/store"
)

// SVG is drawn here on the server: no chart library, no JavaScript, and
// the Content-Security-Policy forbids inline styles, so only presentation
// attributes are used. Every text goes through esc.

func esc(s string) string { return template.HTMLEscapeString(s) }

var stateColour = map[string]string{"up": "#008758", "partial": "#cc7a00", "down": "#d9364f", "unknown": "#5c6f82"}

type mapSVG struct {
	SVG template.HTML
}

// drawMap places the sites by their coordinates (equirectangular, with
// longitudes shrunk by the cosine of the mean latitude, which is exact
// enough for one town) in a 720x440 box, each a dot coloured by its
// gateways' state and linking to its page.
func drawMap(rows []siteRow, href string) mapSVG {
	const W, H, pad = 720.0, 440.0, 60.0
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="map" viewBox="0 0 %g %g" role="img" aria-labelledby="maptitle" xmlns="http://www.w3.org/2000/svg"><title id="maptitle">Map of the sites</title>`, W, H)
	b.WriteString(`<rect width="100%" height="100%" fill="#e8eef4" rx="4"/>`)
	if len(rows) == 0 {
		b.WriteString(`<text x="360" y="220" text-anchor="middle" fill="#5c6f82">no sites in sites.yaml</text></svg>`)
		return mapSVG{SVG: template.HTML(b.String())}
	}
	minLat, maxLat, minLon, maxLon := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, r := range rows {
		minLat, maxLat = math.Min(minLat, r.Coordinates.Lat), math.Max(maxLat, r.Coordinates.Lat)
		minLon, maxLon = math.Min(minLon, r.Coordinates.Lon), math.Max(maxLon, r.Coordinates.Lon)
	}
	k := math.Cos((minLat + maxLat) / 2 * math.Pi / 180)
	spanX, spanY := (maxLon-minLon)*k, maxLat-minLat
	scale := math.Min((W-2*pad)/math.Max(spanX, 1e-9), (H-2*pad)/math.Max(spanY, 1e-9))
	offX := (W - spanX*scale) / 2
	offY := (H - spanY*scale) / 2
	// Numbered dots (the table lists the numbers): names would overlap
	// where sites sit a few hundred metres apart in the town centre.
	// Sites never heard from first, so that a down or up dot is on top where dots overlap.
	order := make([]int, 0, len(rows))
	for _, st := range []string{"unknown", "up", "partial", "down"} {
		for i, r := range rows {
			if r.State == st {
				order = append(order, i)
			}
		}
	}
	for _, i := range order {
		r := rows[i]
		x := offX + (r.Coordinates.Lon-minLon)*k*scale
		y := offY + (maxLat-r.Coordinates.Lat)*scale
		fmt.Fprintf(&b, `<a href="%s%s" class="site-%s"><title>%d %s: %s, %d online</title>`+
			`<circle cx="%.1f" cy="%.1f" r="13" fill="%s" stroke="#fff" stroke-width="2"/>`+
			`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="13" font-weight="700" fill="#fff">%d</text></a>`,
			esc(href), esc(r.ID), esc(r.State), i+1, esc(r.Name), esc(r.State), r.Online,
			x, y, stateColour[r.State], x, y+4.5, i+1)
	}
	b.WriteString(`</svg>`)
	return mapSVG{SVG: template.HTML(b.String())}
}

// barChart is one chart and, for screen readers and for copying, its
// numbers as a table.
type barChart struct {
	Title  string
	SVG    template.HTML
	Labels []string
	Series []seriesData
	Total  float64
	Note   string
}

type seriesData struct {
	Name   string
	Colour string
	Values []float64
	Format func(float64) string
}

// Cell formats series s's value i.
func (c barChart) Cell(s seriesData, i int) string { return s.Format(s.Values[i]) }

var palette = []string{"#0066cc", "#008758", "#cc7a00", "#7a3e9d", "#d9364f", "#5c6f82", "#00838f"}

func count(v float64) string { return fmt.Sprintf("%.0f", v) }

// stacked draws bars of one or more series stacked per label.
func stacked(title string, labels []string, series []seriesData) barChart {
	const W, H, left, right, bottom, top = 720.0, 240.0, 64.0, 16.0, 28.0, 12.0
	c := barChart{Title: title, Labels: labels, Series: series}
	maxV := 0.0
	for i := range labels {
		sum := 0.0
		for _, s := range series {
			sum += s.Values[i]
			c.Total += s.Values[i]
		}
		maxV = math.Max(maxV, sum)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %g %g" role="img" aria-label="%s" xmlns="http://www.w3.org/2000/svg">`, W, H, esc(title))
	plotH := H - bottom - top
	top10, ticks := niceMax(maxV)
	for i := 0; i <= ticks; i++ {
		v := top10 * float64(i) / float64(ticks)
		y := top + plotH - plotH*float64(i)/float64(ticks)
		fmt.Fprintf(&b, `<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="#d5dde5"/>`, left, W-right, y, y)
		f := count
		if len(series) > 0 && series[0].Format != nil {
			f = series[0].Format
		}
		fmt.Fprintf(&b, `<text x="%g" y="%.1f" text-anchor="end" font-size="11" fill="#5c6f82">%s</text>`, left-6, y+4, esc(f(v)))
	}
	n := float64(max(len(labels), 1))
	bw := (W - left - right) / n
	every := int(math.Ceil(n / 12))
	for i, l := range labels {
		x := left + float64(i)*bw
		y := top + plotH
		for si, s := range series {
			h := 0.0
			if top10 > 0 {
				h = plotH * s.Values[i] / top10
			}
			if h > 0 {
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>`,
					x+bw*0.1, y-h, math.Max(bw*0.8, 1), h, palette[si%len(palette)], esc(l), esc(s.Name), esc(s.Format(s.Values[i])))
			}
			y -= h
		}
		if i%every == 0 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle" font-size="11" fill="#5c6f82">%s</text>`, x+bw/2, H-10, esc(l))
		}
	}
	b.WriteString(`</svg>`)
	c.SVG = template.HTML(b.String())
	for i := range c.Series {
		c.Series[i].Colour = palette[i%len(palette)]
	}
	return c
}

// niceMax rounds v up to 1, 2 or 5 times a power of ten, and says how many
// grid steps divide it into round numbers.
func niceMax(v float64) (float64, int) {
	if v <= 1 {
		return 1, 4
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			if m == 2 {
				return m * p, 4
			}
			return m * p, 5
		}
	}
	return 10 * p, 5
}

// buckets returns n consecutive bucket starts from from.
func buckets(from time.Time, n int, next func(time.Time) time.Time) []time.Time {
	out := make([]time.Time, 0, n)
	for t := from; len(out) < n; t = next(t) {
		out = append(out, t)
	}
	return out
}

// barsOf is a one-series chart of counter over the buckets, from rollups
// that start inside them.
func barsOf(title string, starts []time.Time, rs []store.Rollup, counter string, loc *time.Location, layout string, format func(float64) string) barChart {
	vals := sumInto(starts, rs, func(c map[string]int64) float64 { return float64(c[counter]) })
	if format == nil {
		format = count
	}
	labels := make([]string, len(starts))
	for i, t := range starts {
		labels[i] = t.In(loc).Format(layout)
	}
	return stacked(title, labels, []seriesData{{Name: counter, Values: vals, Format: format}})
}

// sumInto adds f of every rollup to the bucket its start falls in.
func sumInto(starts []time.Time, rs []store.Rollup, f func(map[string]int64) float64) []float64 {
	vals := make([]float64, len(starts))
	for _, r := range rs {
		i := bucketOf(starts, r.Start)
		if i >= 0 {
			vals[i] += f(r.Counters)
		}
	}
	return vals
}

// bucketOf is the index of the last start at or before t, -1 before the
// first (starts are sorted; callers read only rollups inside the range).
func bucketOf(starts []time.Time, t time.Time) int {
	lo, hi := 0, len(starts)
	for lo < hi {
		m := (lo + hi) / 2
		if !starts[m].After(t) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo - 1
}
