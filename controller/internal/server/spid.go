package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"

	"github.com/civicwifi/civicwifi/controller/internal/login"
	"github.com/civicwifi/civicwifi/controller/internal/login/pepper"
	"github.com/civicwifi/civicwifi/controller/internal/login/spid"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

// newSPID builds the SPID service provider of controller.yaml's spid block: its key pair, the IdP registry file,
// the pepper of the login block, and lg for grants and consent. It needs the login block (lg non-nil).
func newSPID(c SPIDConfig, lg *login.Server, pepperFile string, st store.Store, cfg func() *sites.Config,
	log *slog.Logger, reg prometheus.Registerer) (*spid.SP, error) {
	if lg == nil {
		return nil, errors.New("spid: the login block (pepper_file) is needed too: SPID logins end in the same grants")
	}
	key, cert, err := spid.LoadKeyPair(c.Key, c.Certificate)
	if err != nil {
		return nil, err
	}
	idps, err := spid.LoadRegistry(c.IdPRegistry)
	if err != nil {
		return nil, err
	}
	pep, err := pepper.Load(pepperFile)
	if err != nil {
		return nil, err
	}
	pub, err := url.Parse(c.PublicURL)
	if err != nil {
		return nil, fmt.Errorf("spid.public_url: %w", err)
	}
	sp, err := spid.New(spid.Options{
		EntityID: c.EntityID, PublicURL: pub, OrganizationURL: c.OrganizationURL, Key: key, Certificate: cert,
		IdPs: idps, Store: st, Sites: cfg, Pepper: pep, Login: lg, Log: log.With("component", "spid"), Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	if cfg().Town.IPACode == "" {
		log.Warn("sites.yaml has no town.ipa_code: the SPID metadata of a public body needs it (/spid/metadata answers 500)")
	}
	return sp, nil
}
