package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/civicwifi/civicwifi/controller/internal/stats"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/civicwifi/civicwifi/controller/internal/store/boltstore"
)

// reportSetup writes a controller.yaml over the repository's sites.yaml (Voghera, Europe/Rome) and a store seeded
// with sessions around October 2026's edges.
func reportSetup(t *testing.T) (dir, config string) {
	t.Helper()
	dir = t.TempDir()
	sitesPath, err := filepath.Abs("../../../sites.yaml")
	if err != nil {
		t.Fatal(err)
	}
	config = filepath.Join(dir, "controller.yaml")
	conf := "sites: " + sitesPath + "\nstore: bolt:store/controller.db\nsigning_key: keys/controller.key\n"
	if err := os.WriteFile(config, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	rome, err := time.LoadLocation("Europe/Rome")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "store"), 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := boltstore.Open(filepath.Join(dir, "store", "controller.db"), boltstore.Options{Location: rome})
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		tm, err := time.ParseInLocation("2006-01-02 15:04", s, rome)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	n := 0
	sess := func(site, user, method, start string, steps ...struct {
		at       string
		down, up uint64
		stop     bool
	}) {
		n++
		id := "s" + string(rune('a'+n))
		ev := store.SessionEvent{ID: id + "0", Kind: store.EventStart, SessionID: id, GatewayID: "gw", SiteID: site,
			ClientMAC: "02:00:00:00:00:0" + string(rune('0'+n)), UserID: user, Method: method, Start: at(start), At: at(start)}
		if _, err := st.RecordEvent(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		for i, s := range steps {
			ev.ID, ev.Kind, ev.At, ev.BytesDown, ev.BytesUp = id+string(rune('1'+i)), store.EventInterim, at(s.at), s.down, s.up
			if s.stop {
				ev.Kind = store.EventStop
			}
			if _, err := st.RecordEvent(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	type step = struct {
		at       string
		down, up uint64
		stop     bool
	}
	// crosses into November: 20 min and 400 bytes in October, the rest in November
	sess("parco-pertini", "u1", "sms", "2026-10-31 23:30", step{"2026-10-31 23:50", 400, 0, false}, step{"2026-11-01 00:30", 1000, 0, true})
	// 1 October 00:10 in Rome is still 30 September in UTC
	sess("parco-pertini", "u2", "click-through", "2026-10-01 00:10", step{"2026-10-01 01:10", 2000, 100, true})
	sess("museo-scienze-naturali", "u1", "voucher", "2026-10-15 10:00", step{"2026-10-15 10:30", 50, 0, true})
	// started in September: its 45 minutes and 10 bytes after midnight count in October, the session does not
	sess("biblioteca-ricottiana", "u3", "spid", "2026-09-30 23:30", step{"2026-10-01 00:15", 10, 0, true})
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, config
}

func TestReportCommand(t *testing.T) {
	dir, config := reportSetup(t)

	t.Run("town csv", func(t *testing.T) {
		code, out, errs := runCmd("report", "-config", config, "-month", "2026-10")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		b, ok := strings.CutPrefix(out, "\ufeff")
		if !ok {
			t.Fatalf("no BOM: %q", out[:20])
		}
		recs, err := csv.NewReader(strings.NewReader(b)).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][]string{}
		for _, r := range recs[1:] {
			got[r[2]] = r[5:]
		}
		zero := []string{"0", "0", "0", "0", "0", "0", "0", "0", "0", "0"}
		want := map[string][]string{
			//                     sessions users user_days minutes down up click-through sms spid voucher
			"palazzo-comunale":       zero,
			"parco-pertini":          {"2", "2", "2", "80", "2400", "100", "1", "1", "0", "0"},
			"biblioteca-ricottiana":  {"0", "0", "0", "45", "10", "0", "0", "0", "0", "0"},
			"museo-scienze-naturali": {"1", "1", "1", "30", "50", "0", "0", "0", "0", "1"},
			"":                       {"3", "2", "3", "155", "2460", "100", "1", "1", "0", "1"}, // u1 used two sites: once
		}
		for _, id := range []string{"parco-moschini", "casa-gallini", "medassino-piazza-chiesa", "oriolo-parco-scuole",
			"torremenapace-parco-asilo", "san-vittore-parco-palestra", "pombio-parco-auser"} {
			want[id] = zero
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("October by site (-want +got):\n%s", diff)
		}
		if len(recs) != 13 || strings.Join(recs[0], ",") != strings.Join(stats.CSVColumns(stats.KnownMethods()), ",") {
			t.Errorf("%d records, header %v", len(recs), recs[0])
		}
		for _, line := range []string{
			"\r\nsite,2026-10,museo-scienze-naturali,\"Museo civico di scienze naturali \"\"Giuseppe Orlandi\"\"\",museum,1,1,1,30,50,0,0,0,0,1\r\n",
			"\r\nsite,2026-10,medassino-piazza-chiesa,\"Medassino, piazza della Chiesa\",square,0,0,0,0,0,0,0,0,0,0\r\n",
			"\r\ntotal,2026-10,,Comune di Voghera,,3,2,3,155,2460,100,1,1,0,1\r\n",
		} {
			if !strings.Contains(out, line) {
				t.Errorf("no line %q in\n%s", line, out)
			}
		}
	})

	t.Run("site json to a file", func(t *testing.T) {
		file := filepath.Join(dir, "pertini.json")
		code, out, errs := runCmd("report", "-config", config, "-month", "2026-10", "-site", "parco-pertini", "-format", "json", "-o", file)
		if code != 0 || out != "" {
			t.Fatalf("exit %d, stdout %q: %s", code, out, errs)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var rep stats.Report
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatal(err)
		}
		if len(rep.Rows) != 31 || rep.Timezone != "Europe/Rome" || rep.From.Format(time.RFC3339) != "2026-10-01T00:00:00+02:00" {
			t.Fatalf("rows %d, timezone %s, from %v", len(rep.Rows), rep.Timezone, rep.From)
		}
		type line struct {
			Period                  string
			Sessions                int64
			Users                   int
			OnlineMS, BytesDown, Up int64
		}
		l := func(r stats.Row) line {
			return line{r.Period, r.Sessions, r.DistinctUsers, r.OnlineMS, r.BytesDown, r.BytesUp}
		}
		got := []line{l(rep.Rows[0]), l(rep.Rows[1]), l(rep.Rows[30]), l(rep.Total)}
		want := []line{
			{"2026-10-01", 1, 1, 3_600_000, 2000, 100},
			{"2026-10-02", 0, 0, 0, 0, 0},
			{"2026-10-31", 1, 1, 1_200_000, 400, 0},
			{"2026-10", 2, 2, 4_800_000, 2400, 100},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("parco-pertini's October (-want +got):\n%s", diff)
		}
	})

	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad month", []string{"-month", "2026-13"}, 1, `controller report: -month: invalid query: month "2026-13" is not YYYY-MM (e.g. 2026-10)`},
		{"unknown site", []string{"-month", "2026-10", "-site", "parco-nope"}, 1, `-site "parco-nope": no such site in`},
		{"bad format", []string{"-month", "2026-10", "-format", "xml"}, 2, `-format "xml": want csv or json`},
		{"positional", []string{"2026-10"}, 2, "usage: controller report"},
	} {
		t.Run(c.name, func(t *testing.T) {
			file := filepath.Join(dir, "out-"+strings.ReplaceAll(c.name, " ", "-"))
			code, out, errs := runCmd(append([]string{"report", "-config", config, "-o", file}, c.args...)...)
			if code != c.code || out != "" || !strings.Contains(errs, c.want) {
				t.Errorf("exit %d (want %d), stdout %q, stderr %q (want %q)", code, c.code, out, errs, c.want)
			}
			if _, err := os.Stat(file); !os.IsNotExist(err) {
				t.Errorf("a failed report left %s", file)
			}
		})
	}

	t.Run("no store", func(t *testing.T) {
		if err := os.Rename(filepath.Join(dir, "store"), filepath.Join(dir, "moved")); err != nil {
			t.Fatal(err)
		}
		code, _, errs := runCmd("report", "-config", config, "-month", "2026-10")
		if code != 1 || !strings.Contains(errs, "opening the store") {
			t.Errorf("exit %d, stderr %q", code, errs)
		}
		if _, err := os.Stat(filepath.Join(dir, "store")); !os.IsNotExist(err) {
			t.Errorf("the report created a store: %v", err)
		}
	})

}
