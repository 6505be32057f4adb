package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"text/tabwriter"

	"github.com/civicwifi/civicwifi/controller/internal/server"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/store"
)

// siteSessions is one site's line of `controller sessions`.
type siteSessions struct {
	Site      string `json:"site"`
	Sessions  int64  `json:"sessions"`
	Open      int    `json:"open"`
	BytesDown uint64 `json:"bytes_down"`
	BytesUp   uint64 `json:"bytes_up"`
}

// sessions prints each site's session totals from the store: what the
// controller has collected. With the embedded store the controller must be
// stopped (the file is locked while it runs); with Redis it may run.
func sessions(ctx context.Context, e *env, args []string) error {
	fs := newFlags("sessions", e)
	path := fs.String("config", "/etc/civicwifi/controller.yaml", "the controller's own config file")
	site := fs.String("site", "", "only this site")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseInterspersed(fs, args)
	if err != nil || len(pos) != 0 {
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
	st, err := openStore(ctx, cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer st.Close()
	var out []siteSessions
	for _, s := range sc.Sites {
		if *site != "" && s.ID != *site {
			continue
		}
		line, err := siteLine(ctx, st, s.ID)
		if err != nil {
			return err
		}
		out = append(out, line)
	}
	if *site != "" && len(out) == 0 {
		return fmt.Errorf("no site %q in %s", *site, cfg.Sites)
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SITE\tSESSIONS\tOPEN\tDOWN BYTES\tUP BYTES")
	for _, l := range out {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", l.Site, l.Sessions, l.Open, l.BytesDown, l.BytesUp)
	}
	return tw.Flush()
}

func siteLine(ctx context.Context, st store.Store, id string) (siteSessions, error) {
	t, err := st.SiteTotals(ctx, id)
	if err != nil {
		return siteSessions{}, fmt.Errorf("reading totals of %s: %w", id, err)
	}
	open, err := st.OpenSessions(ctx, id)
	if err != nil {
		return siteSessions{}, fmt.Errorf("reading open sessions of %s: %w", id, err)
	}
	return siteSessions{Site: id, Sessions: t.Sessions, Open: len(open), BytesDown: t.BytesDown, BytesUp: t.BytesUp}, nil
}
