package dashboard

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/dashboard/auth"
	"github.com/labstack/echo/v4"
)

const (
	oidcCookie = "__Host-cw-oidc" // the state, bound to this browser; Lax: the provider's redirect back is cross-site
	keyOIDC    = "dashboard/oidc/"
)

type oidcPending struct {
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"`
	Next     string `json:"next"`
}

func (d *Dashboard) oidcStart(c echo.Context) error {
	if d.o.OIDC == nil {
		return echo.NewHTTPError(http.StatusNotFound, "single sign-on is not configured")
	}
	state := auth.RandomToken()
	p := oidcPending{Nonce: auth.RandomToken(), Verifier: auth.GenerateVerifier(), Next: safeNext(c.QueryParam("next"))}
	b, _ := json.Marshal(p)
	if err := d.o.Store.Put(c.Request().Context(), keyOIDC+hashID(state), b, 10*time.Minute); err != nil {
		return fmt.Errorf("keeping the sign-on state: %w", err)
	}
	c.SetCookie(&http.Cookie{Name: oidcCookie, Value: state, Path: "/", MaxAge: 600, Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	return c.Redirect(http.StatusSeeOther, d.o.OIDC.AuthCodeURL(state, p.Nonce, p.Verifier))
}

// oidcCallback finishes a sign-on. The state must be this browser's and
// is single use; the page it answers with moves on by a same-site
// navigation, so the SameSite=Strict session cookie goes with it.
func (d *Dashboard) oidcCallback(c echo.Context) error {
	ctx := c.Request().Context()
	if d.o.OIDC == nil {
		return echo.NewHTTPError(http.StatusNotFound, "single sign-on is not configured")
	}
	state := c.QueryParam("state")
	ck, err := c.Cookie(oidcCookie)
	if err != nil || state == "" || !(auth.Session{CSRF: ck.Value}).CheckCSRF(state) {
		return echo.NewHTTPError(http.StatusForbidden, "sign-on state missing or not this browser's: start again")
	}
	c.SetCookie(&http.Cookie{Name: oidcCookie, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	b, err := d.o.Store.Take(ctx, keyOIDC+hashID(state))
	if err != nil {
		return echo.NewHTTPError(http.StatusForbidden, "sign-on expired or already used: start again")
	}
	var p oidcPending
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("reading the sign-on state: %w", err)
	}
	if e := c.QueryParam("error"); e != "" {
		d.audit(ctx, "sso", "sso.fail", c.RealIP(), e)
		return echo.NewHTTPError(http.StatusUnauthorized, "the provider refused the sign-on: "+e)
	}
	user, role, err := d.o.OIDC.Finish(ctx, c.QueryParam("code"), p.Nonce, p.Verifier)
	if err != nil {
		d.audit(ctx, "sso:"+user, "sso.fail", c.RealIP(), err.Error())
		if errors.Is(err, auth.ErrNoRole) {
			return echo.NewHTTPError(http.StatusForbidden, err.Error())
		}
		d.log.Warn("dashboard sign-on", "err", err)
		return echo.NewHTTPError(http.StatusUnauthorized, "the sign-on could not be verified")
	}
	token, s, err := d.o.Auth.Start(ctx, "sso:"+user, role, "oidc")
	if err != nil {
		return err
	}
	setCookie(c, sessionCookie, token, 0)
	d.audit(ctx, s.User, "login", c.RealIP(), "role "+string(s.Role)+" via oidc")
	return c.HTML(http.StatusOK, `<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=`+
		esc(p.Next)+`"><title>Signed in</title><p><a href="`+esc(p.Next)+`">Continue</a></p>`)
}
