package stats_test

import (
	"bytes"
	"context"
	"encoding/xml"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/stats"
	"github.com/google/go-cmp/cmp"
)

// cell is one spreadsheet cell as LibreOffice read it.
type cell struct {
	Type  string // float, string, date...
	Value string // office:value for numbers, the text otherwise (paragraphs joined by \n)
}

// fods reads the first sheet of a flat OpenDocument spreadsheet.
func fods(t *testing.T, b []byte) [][]cell {
	t.Helper()
	var doc struct {
		Rows []struct {
			Cells []struct {
				Type    string   `xml:"value-type,attr"`
				Value   string   `xml:"value,attr"`
				Date    string   `xml:"date-value,attr"`
				Formula string   `xml:"formula,attr"`
				Repeat  int      `xml:"number-columns-repeated,attr"`
				Paras   []string `xml:"p"`
			} `xml:"table-cell"`
		} `xml:"body>spreadsheet>table>table-row"`
	}
	if err := xml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var out [][]cell
	for _, r := range doc.Rows {
		var row []cell
		for _, c := range r.Cells {
			if c.Formula != "" {
				t.Errorf("LibreOffice made a formula of %q", c.Formula)
			}
			v := strings.Join(c.Paras, "\n")
			switch c.Type {
			case "float":
				v = c.Value
			case "date":
				v = c.Date
			}
			for range max(c.Repeat, 1) {
				row = append(row, cell{c.Type, v})
			}
		}
		out = append(out, row)
	}
	return out
}

// TestLibreOfficeOpensCSV opens a town report in a real LibreOffice Calc
// (headless, converting to flat ODS) with the import settings its Text
// Import dialog offers for this file (comma, double quote, UTF-8) and an
// Italian locale, and checks every cell: names with quotes, commas, a line
// break and accents come out whole, the formula-like name stays text, and
// every number is a number.
func TestLibreOfficeOpensCSV(t *testing.T) {
	needTools(t, "soffice")
	ctx := context.Background()
	siteIDs := []string{"parco-pertini", "biblioteca", "museo", "municipio"}
	r := rand.New(rand.NewPCG(10, 2026))
	evs := events(r, generate(r, siteIDs, 80))
	st := openStore(t)
	seed(t, st, evs)
	ss := []stats.Site{
		{ID: "parco-pertini", Name: "Parco Pertini", Kind: "park"},
		{ID: "biblioteca", Name: "Biblioteca civica \"Ricottiana\", sala lettura", Kind: "library"},
		{ID: "museo", Name: "Museo di scienze naturali\nCasa Gallini", Kind: "museum"},
		{ID: "municipio", Name: "=Municipio (città) – è più", Kind: "office"},
	}
	rep, err := stats.New(st, rome).TownReport(ctx, "Comune di Voghera", ss, "2026-10")
	if err != nil {
		t.Fatal(err)
	}
	for _, bom := range []bool{true, false} {
		t.Run("bom="+strconv.FormatBool(bom), func(t *testing.T) {
			dir := t.TempDir()
			var buf bytes.Buffer
			if err := rep.WriteCSV(&buf, stats.CSVOptions{BOM: bom}); err != nil {
				t.Fatal(err)
			}
			in := filepath.Join(dir, "voghera-2026-10.csv")
			if err := os.WriteFile(in, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
			defer cancel()
			// CSV filter options: separator 44 (,), text delimiter 34 ("), charset 76 (UTF-8), from line 1,
			// default column formats, language 1040 (Italian: decimal comma, so only integers read as numbers)
			cmd := exec.CommandContext(cctx, "soffice", "--headless", "--norestore", "--nolockcheck",
				"-env:UserInstallation=file://"+filepath.Join(dir, "profile"),
				"--infilter=CSV:44,34,76,1,,1040", "--convert-to", "fods", "--outdir", dir, in)
			cmd.Env = append(os.Environ(), "HOME="+dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("running soffice: %v\n%s", err, out)
			}
			b, err := os.ReadFile(filepath.Join(dir, "voghera-2026-10.fods"))
			if err != nil {
				t.Fatal(err)
			}
			got := fods(t, b)
			var want [][]cell
			var head []cell
			for _, c := range stats.CSVColumns(rep.Methods) {
				head = append(head, cell{"string", c})
			}
			want = append(want, head)
			for _, r := range append(rep.Rows, rep.Total) {
				n := func(v int64) cell { return cell{"float", strconv.FormatInt(v, 10)} }
				s := func(v string) cell {
					if v == "" {
						return cell{}
					}
					return cell{"string", v}
				}
				row := []cell{s(r.Row), s(r.Period), s(r.Site), s(stats.Text(r.SiteName)), s(r.Kind),
					n(r.Sessions), n(int64(r.DistinctUsers)), n(r.UserDays), n(stats.Minutes(r.OnlineMS)), n(r.BytesDown), n(r.BytesUp)}
				for _, m := range rep.Methods {
					row = append(row, n(r.Methods[m]))
				}
				want = append(want, row)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("the report as LibreOffice reads it (-want +got):\n%s", diff)
			}
			if rep.Total.BytesDown < 1<<32 {
				t.Errorf("the month's bytes (%d) do not exercise numbers above 32 bits", rep.Total.BytesDown)
			}
		})
	}
}
