package dashboard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/civicwifi/civicwifi/controller/internal/dashboard/adminconf"
	"github.com/civicwifi/civicwifi/controller/internal/dashboard/auth"
	"github.com/civicwifi/civicwifi/controller/internal/login/voucher"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

// EnvOIDCSecret holds the OIDC client secret; admin.oidc.client_secret_file
// is read when it is not set. controller.yaml never holds the secret.
const EnvOIDCSecret = "CIVICWIFI_OIDC_SECRET"

// The admin block's types live in package adminconf (the controller's
// config names them without importing the dashboard).
type (
	FileConfig     = adminconf.FileConfig
	OIDCFileConfig = adminconf.OIDCFileConfig
	RawFileConfig  = adminconf.RawFileConfig
)

// ParseFileConfig validates the admin block (see adminconf.ParseFileConfig).
var ParseFileConfig = adminconf.ParseFileConfig

// Deps are what the dashboard uses from the running controller.
type Deps struct {
	Store    store.Store
	Sites    func() *sites.Config
	Commands Commander           // *server.Server
	Gatherer prometheus.Gatherer // the controller's registry
	Vouchers *voucher.Book       // nil: no voucher button
	Log      *slog.Logger
}

// Setup builds the dashboard from the admin block: the accounts file
// (checked now: a missing file is fine, a broken or readable one is not),
// and the OIDC provider (discovered now; its secret from $CIVICWIFI_OIDC_SECRET
// or client_secret_file).
func Setup(ctx context.Context, fc FileConfig, deps Deps) (*Dashboard, error) {
	if !fc.Enabled() {
		return nil, errors.New("dashboard: no admin block")
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mgr, err := auth.NewManager(auth.Options{Store: deps.Store, AccountsPath: fc.Accounts, IdleTimeout: fc.IdleTimeout, MaxAge: fc.MaxAge, Log: log})
	if err != nil {
		return nil, err
	}
	var sso *auth.OIDC
	if o := fc.OIDC; o != nil {
		secret := os.Getenv(EnvOIDCSecret)
		if secret == "" && o.ClientSecretFile != "" {
			b, err := os.ReadFile(o.ClientSecretFile)
			if err != nil {
				return nil, fmt.Errorf("reading the OIDC client secret: %w", err)
			}
			secret = strings.TrimSpace(string(b))
		}
		if secret == "" {
			return nil, fmt.Errorf("the OIDC client secret: set $%s or admin.oidc.client_secret_file", EnvOIDCSecret)
		}
		if sso, err = auth.NewOIDC(ctx, auth.OIDCOptions{Issuer: o.Issuer, ClientID: o.ClientID, ClientSecret: secret, RedirectURL: o.RedirectURL,
			RoleClaim: o.RoleClaim, Roles: o.Roles, NameClaim: o.NameClaim, Label: o.Label}); err != nil {
			return nil, err
		}
	}
	return New(Options{Store: deps.Store, Sites: deps.Sites, Auth: mgr, OIDC: sso, Commands: deps.Commands, Gatherer: deps.Gatherer,
		Vouchers: deps.Vouchers, TrustedProxies: fc.TrustedProxies, Log: log})
}
