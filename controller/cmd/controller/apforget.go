package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/apapi"
	"github.com/civicwifi/civicwifi/controller/internal/server"
	"github.com/civicwifi/civicwifi/controller/internal/store"
)

// forgetAP removes an access point's enrollment, so that after a factory reset (or a replacement with the same
// MAC) it enrolls again with the installation's token. With the embedded store the controller must be stopped
// (the file is locked while it runs); with Redis it may run.
func forgetAP(ctx context.Context, e *env, args []string) error {
	fs := newFlags("forget-ap", e)
	path := fs.String("config", "/etc/civicwifi/controller.yaml", "the controller's own config file")
	pos, err := parseInterspersed(fs, args)
	if err != nil || len(pos) != 1 {
		return errUsage
	}
	mac, err := apapi.NormalizeMAC(pos[0])
	if err != nil {
		return err
	}
	cfg, err := server.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return errReported
	}
	st, err := openStore(ctx, cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer st.Close()
	if err := server.ForgetAP(ctx, st, mac); err != nil {
		return err
	}
	if err := st.AppendAudit(ctx, store.AuditEntry{At: time.Now(), Actor: "controller forget-ap", Action: "ap.forget", Target: mac}); err != nil {
		fmt.Fprintf(e.stderr, "auditing: %v\n", err)
	}
	fmt.Fprintf(e.stdout, "forgot access point %s: it enrolls again with the installation's token (cw-ap-provision)\n", mac)
	return nil
}
