package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/server"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/stats"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/civicwifi/civicwifi/controller/internal/store/boltstore"
	"github.com/civicwifi/civicwifi/controller/internal/store/redisstore"
)

// report is `controller report -month 2026-10 [-site id] [-format csv|json] [-o file]`: the month's report
// for the council, of the whole town (one row per site and the town's total) or of one site (one row per day and
// the month's total), from the store's rollups. Months and days are in sites.yaml's town timezone. With the
// embedded store the controller must be stopped (the file is locked while it runs); with Redis it may run.
func report(ctx context.Context, e *env, args []string) error {
	fs := newFlags("report", e)
	path := fs.String("config", "/etc/civicwifi/controller.yaml", "the controller's own config file")
	month := fs.String("month", "", "the month, YYYY-MM (default: last month)")
	site := fs.String("site", "", "one site's report, per day (default: the town's, per site)")
	format := fs.String("format", "csv", "csv (RFC 4180, UTF-8) or json")
	bom := fs.Bool("bom", true, "start the CSV with a UTF-8 byte order mark (for Excel; LibreOffice reads either)")
	out := fs.String("o", "-", "write to this file instead of standard output")
	pos, err := parseInterspersed(fs, args)
	if err != nil || len(pos) != 0 {
		return errUsage
	}
	if *format != "csv" && *format != "json" {
		fmt.Fprintf(e.stderr, "controller report: -format %q: want csv or json\n", *format)
		return errUsage
	}
	cfg, err := server.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return errReported
	}
	sc, err := sites.Load(cfg.Sites)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return errReported
	}
	loc := sc.Town.Timezone
	if loc == nil {
		loc = time.UTC
	}
	if *month == "" {
		y, m, _ := time.Now().In(loc).Date()
		*month = time.Date(y, m-1, 1, 0, 0, 0, 0, loc).Format("2006-01")
	}
	all := stats.SitesOf(sc)
	var one *stats.Site
	if *site != "" {
		for i := range all {
			if all[i].ID == *site {
				one = &all[i]
			}
		}
		if one == nil {
			ids := make([]string, len(all))
			for i, s := range all {
				ids[i] = s.ID
			}
			return fmt.Errorf("-site %q: no such site in %s (sites: %s)", *site, cfg.Sites, strings.Join(ids, ", "))
		}
	}
	eng := stats.New(nil, loc)
	if _, _, err := eng.MonthRange(*month); err != nil {
		return fmt.Errorf("-month: %w", err)
	}
	st, err := openTownStore(ctx, cfg, loc, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer st.Close()
	eng = stats.New(st, loc)
	var rep stats.Report
	if one != nil {
		rep, err = eng.SiteReport(ctx, sc.Town.Name, *one, *month)
	} else {
		rep, err = eng.TownReport(ctx, sc.Town.Name, all, *month)
	}
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if *format == "json" {
		err = rep.WriteJSON(&buf)
	} else {
		err = rep.WriteCSV(&buf, stats.CSVOptions{BOM: *bom})
	}
	if err != nil {
		return err
	}
	if *out == "-" {
		_, err = e.stdout.Write(buf.Bytes())
		return err
	}
	return writeFileAtomic(*out, buf.Bytes())
}

// writeFileAtomic writes data to path through a temporary file in the same directory, so a reader never sees half
// a report and a failure leaves any older file as it was.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// openTownStore opens the store as openStore does, with days beginning at midnight in loc (sites.yaml's town
// timezone): the daily rollups and distinct-user sets that reports read are kept per day of the town.
// `controller run` must open its store the same way (the same Location on every replica).
func openTownStore(ctx context.Context, cfg server.FileConfig, loc *time.Location, log *slog.Logger) (store.Store, error) {
	if p, ok := strings.CutPrefix(cfg.Store, "bolt:"); ok {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("opening the store: %w", err)
		}
		st, err := boltstore.Open(p, boltstore.Options{Log: log.With("component", "boltstore"), Location: loc, LockTimeout: 2 * time.Second})
		if err != nil {
			return nil, fmt.Errorf("opening the store (is the controller running? stop it, or use Redis): %w", err)
		}
		return st, nil
	}
	u, err := redisURL(cfg)
	if err != nil {
		return nil, fmt.Errorf("opening the store: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := redisstore.Open(cctx, u, redisstore.Options{Location: loc})
	if err != nil {
		return nil, fmt.Errorf("opening the store: %w", err)
	}
	return st, nil
}
