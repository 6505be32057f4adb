package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nyaruka/phonenumbers"

	"github.com/civicwifi/civicwifi/controller/internal/login/pepper"
	"github.com/civicwifi/civicwifi/controller/internal/login/spid"
	"github.com/civicwifi/civicwifi/controller/internal/server"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/store"
)

// privacyExport is what `controller privacy export` writes: everything the
// store ties to one person (GDPR art. 15). The phone number or fiscal code
// itself is not kept anywhere; the pseudonym is its keyed hash.
type privacyExport struct {
	Pseudonym string          `json:"pseudonym"`
	Sessions  []store.Session `json:"sessions"`
	Devices   []string        `json:"remembered_devices"` // MACs let in again without a login
}

// privacy answers a resident's request (GDPR art. 15 and 17) made through
// the town: export or erase everything tied to one phone number or fiscal
// code. Recorded in the audit log, without the number or code.
func privacy(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || (args[0] != "export" && args[0] != "erase") {
		return errUsage
	}
	verb := args[0]
	fs := newFlags("privacy "+verb, e)
	path := fs.String("config", "/etc/civicwifi/controller.yaml", "the controller's own config file")
	phone := fs.String("phone", "", "the resident's phone number (national numbers as Italian)")
	fiscal := fs.String("fiscal-code", "", "the resident's fiscal code (SPID)")
	actor := fs.String("actor", os.Getenv("USER"), "who handles the request (for the audit log)")
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil || len(pos) != 0 || (*phone == "") == (*fiscal == "") {
		return errUsage
	}
	cfg, err := server.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return errReported
	}
	if cfg.Login.PepperFile == "" {
		return errors.New("controller.yaml has no login block: there is no pepper, so no resident data is tied to a number or code")
	}
	p, err := pepper.Load(cfg.Login.PepperFile)
	if err != nil {
		return err
	}
	var subject string
	switch {
	case *phone != "":
		num, err := phonenumbers.Parse(*phone, "IT")
		if err != nil || !phonenumbers.IsValidNumber(num) {
			return fmt.Errorf("-phone: not a valid phone number")
		}
		subject = "phone:" + phonenumbers.Format(num, phonenumbers.E164)
	default:
		cf, ok := spid.FiscalNumber(*fiscal)
		if !ok {
			return fmt.Errorf("-fiscal-code: not a fiscal code (16 letters and digits, or 11 digits)")
		}
		subject = "spid:" + cf
	}
	user := p.Pseudonym(subject)
	var loc *time.Location
	if town, err := sites.Load(cfg.Sites); err == nil {
		loc = town.Town.Timezone
	}
	st, err := openStore(ctx, cfg, loc, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer st.Close()
	sessions, err := st.UserSessions(ctx, user)
	if err != nil {
		return fmt.Errorf("reading the resident's sessions: %w", err)
	}
	out := privacyExport{Pseudonym: user, Sessions: sessions, Devices: []string{}}
	seen := map[string]bool{}
	for _, s := range sessions {
		if seen[s.ClientMAC] {
			continue
		}
		seen[s.ClientMAC] = true
		b, err := st.Get(ctx, "remember:"+s.ClientMAC)
		if err != nil {
			continue
		}
		var rec struct {
			User string `json:"user"`
		}
		if json.Unmarshal(b, &rec) == nil && rec.User == user {
			out.Devices = append(out.Devices, s.ClientMAC)
		}
	}
	now := time.Now()
	if verb == "export" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
		return audit(ctx, st, now, *actor, "privacy.export", user, fmt.Sprintf("%d sessions, %d remembered devices", len(sessions), len(out.Devices)))
	}
	for _, mac := range out.Devices {
		if err := st.Delete(ctx, "remember:"+mac); err != nil {
			return fmt.Errorf("forgetting a remembered device: %w", err)
		}
	}
	n, err := st.ForgetUser(ctx, user)
	if err != nil {
		return fmt.Errorf("erasing the resident's sessions: %w", err)
	}
	fmt.Fprintf(e.stdout, "erased %d sessions and %d remembered devices of pseudonym %s\n", n, len(out.Devices), user)
	return audit(ctx, st, now, *actor, "privacy.erase", user, fmt.Sprintf("%d sessions, %d remembered devices", n, len(out.Devices)))
}

func audit(ctx context.Context, st store.Store, at time.Time, actor, action, target, detail string) error {
	if actor == "" {
		actor = "controller privacy"
	}
	if err := st.AppendAudit(ctx, store.AuditEntry{At: at, Actor: actor, Action: action, Target: target, Detail: detail}); err != nil {
		return fmt.Errorf("recording the request in the audit log: %w", err)
	}
	return nil
}
