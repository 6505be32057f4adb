package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/login"
	"github.com/civicwifi/civicwifi/controller/internal/login/pepper"
	"github.com/civicwifi/civicwifi/controller/internal/login/voucher"
	"github.com/civicwifi/civicwifi/controller/internal/server"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/internal/quantity"
)

// vouchers creates a batch of vouchers in the store and writes a printable HTML sheet with each code and a QR
// code that opens the portal with the code filled in. The codes are only on the sheet: the store keeps their
// keyed hashes. With the embedded store the controller must be stopped (the file is locked while it runs).
func vouchers(ctx context.Context, e *env, args []string) error {
	fs := newFlags("vouchers", e)
	path := fs.String("config", "/etc/civicwifi/controller.yaml", "the controller's own config file")
	site := fs.String("site", "", "the site the vouchers are for")
	town := fs.Bool("town", false, "vouchers for every site of the town (instead of -site)")
	count := fs.Int("count", 0, fmt.Sprintf("how many vouchers (1 to %d)", voucher.MaxBatch))
	duration := fs.Duration("duration", 24*time.Hour, "access time of each voucher, from its first use")
	data := fs.String("data", "", "data allowance of each voucher (e.g. 2GB); empty: the site's daily quota")
	devices := fs.Int("devices", 0, "devices per voucher; 0: the site policy's voucher.devices")
	valid := fs.String("valid", "30d", "how long an unused voucher stays valid (e.g. 30d, 72h) or the last day (2026-12-31)")
	portal := fs.String("portal", "", "the portal's base URL for the QR codes; default http://<the site's gateway address>")
	note := fs.String("note", "", "a note recorded with the batch (e.g. the desk it is for)")
	out := fs.String("out", "", "the HTML sheet to write")
	pos, err := parseInterspersed(fs, args)
	if err != nil || len(pos) != 0 || *out == "" || *count == 0 || (*site == "") == !*town {
		if err == nil {
			fmt.Fprintln(e.stderr, "controller vouchers: give -count, -out, and either -site or -town")
		}
		return errUsage
	}
	cfg, err := server.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return errReported
	}
	lc, err := login.LoadFileConfig(*path)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return errReported
	}
	if !lc.Enabled() {
		return fmt.Errorf("%s has no login.pepper_file: vouchers need it", *path)
	}
	sc, err := sites.Load(cfg.Sites)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return errReported
	}
	spec := voucher.Spec{Duration: *duration, Devices: *devices, Note: *note}
	now := time.Now()
	if spec.ValidUntil, err = parseValid(*valid, now, sc.Town.Timezone); err != nil {
		return fmt.Errorf("-valid: %w", err)
	}
	if *data != "" {
		b, err := quantity.ParseBytes(*data)
		if err != nil {
			return fmt.Errorf("-data: %w", err)
		}
		spec.DataBytes = uint64(b)
	}
	where, base := "tutti i punti Wi-Fi", *portal
	if *town {
		if base == "" {
			return fmt.Errorf("-town needs -portal (a portal address every site answers, e.g. http://portal.wifi.comune.it)")
		}
		if spec.Devices == 0 {
			spec.Devices = 1
		}
	} else {
		var s *sites.Site
		for i := range sc.Sites {
			if sc.Sites[i].ID == *site {
				s = &sc.Sites[i]
			}
		}
		if s == nil {
			return fmt.Errorf("no site %q in %s", *site, cfg.Sites)
		}
		if !s.Policy.Login.Allows(sites.Voucher) {
			return fmt.Errorf("site %q: its policy %q does not allow voucher login", s.ID, s.PolicyName)
		}
		spec.Site, where = s.ID, s.Name
		if spec.Devices == 0 {
			spec.Devices = s.Policy.Login.Voucher.Devices
		}
		if base == "" {
			base = "http://" + s.ClientNetwork.Gateway.String()
		}
	}
	p, err := pepper.Load(lc.PepperFile)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer st.Close()
	actor := "cli"
	if u, err := user.Current(); err == nil {
		actor = "cli:" + u.Username
	}
	book := &voucher.Book{Store: st, Pepper: p}
	batch, codes, err := book.Create(ctx, spec, *count, actor)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600) // the codes are secrets until handed out
	if err != nil {
		return fmt.Errorf("writing the sheet: %w", err)
	}
	if err := voucher.WriteSheet(f, voucher.SheetInfo{Town: sc.Town.Name, Where: where, Batch: batch, Portal: base, Location: sc.Town.Timezone}, codes); err != nil {
		f.Close()
		return fmt.Errorf("writing the sheet: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing the sheet: %w", err)
	}
	fmt.Fprintf(e.stdout, "batch %s: %d vouchers for %s, %s each, %d devices, valid until %s; sheet %s\n",
		batch.ID, len(codes), where, spec.Duration, spec.Devices, spec.ValidUntil.Format(time.DateOnly), *out)
	return nil
}

// parseValid reads "30d", "72h" or a last day "2026-12-31" (valid to its end in loc).
func parseValid(s string, now time.Time, loc *time.Location) (time.Time, error) {
	if loc == nil {
		loc = time.Local
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(d, "%d", &n); err == nil && n > 0 && fmt.Sprint(n) == d {
			return now.Add(time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(d), nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, s, loc); err == nil {
		return t.AddDate(0, 0, 1), nil
	}
	return time.Time{}, fmt.Errorf("%q: want days (30d), a duration (72h) or a date (2026-12-31)", s)
}
