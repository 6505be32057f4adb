package dashboard

import (
	"errors"
	"net/http"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/dashboard/auth"
	"github.com/labstack/echo/v4"
)

type loginData struct {
	CSRF  string
	Next  string
	Name  string
	Error string
	SSO   string // the sign-on button's label, "" without OIDC
}

func (d *Dashboard) loginForm(c echo.Context, code int, ld loginData) error {
	ld.CSRF = auth.RandomToken()
	setCookie(c, loginCookie, ld.CSRF, 30*time.Minute)
	if d.o.OIDC != nil {
		ld.SSO = d.o.OIDC.Label()
	}
	return d.render(c, code, "login", page{Title: "Sign in", Data: ld})
}

func (d *Dashboard) loginPage(c echo.Context) error {
	if ck, err := c.Cookie(sessionCookie); err == nil {
		if _, err := d.o.Auth.Lookup(c.Request().Context(), ck.Value); err == nil {
			return c.Redirect(http.StatusSeeOther, safeNext(c.QueryParam("next")))
		}
	}
	return d.loginForm(c, http.StatusOK, loginData{Next: safeNext(c.QueryParam("next"))})
}

// login checks the login form's double-submit token, then the password
// (auth.Manager counts the attempt first), and starts a new session with a
// new token (no fixation).
func (d *Dashboard) login(c echo.Context) error {
	ctx := c.Request().Context()
	ck, err := c.Cookie(loginCookie)
	if err != nil || ck.Value == "" || !(auth.Session{CSRF: ck.Value}).CheckCSRF(c.FormValue("csrf")) {
		return echo.NewHTTPError(http.StatusForbidden, "the form's security token is missing or wrong: reload the sign-in page")
	}
	if err := d.cop.Check(c.Request()); err != nil {
		return echo.NewHTTPError(http.StatusForbidden, "cross-origin request refused")
	}
	name, pw := c.FormValue("name"), c.FormValue("password")
	next := safeNext(c.FormValue("next"))
	token, s, err := d.o.Auth.Login(ctx, name, pw, c.RealIP())
	switch {
	case errors.Is(err, auth.ErrRateLimited):
		d.audit(ctx, name, "login.limited", c.RealIP(), "")
		return d.loginForm(c, http.StatusTooManyRequests, loginData{Next: next, Name: name, Error: err.Error()})
	case errors.Is(err, auth.ErrBadCredentials):
		d.audit(ctx, name, "login.fail", c.RealIP(), "")
		return d.loginForm(c, http.StatusUnauthorized, loginData{Next: next, Name: name, Error: err.Error()})
	case err != nil:
		return err
	}
	clearCookie(c, loginCookie)
	setCookie(c, sessionCookie, token, 0)
	d.audit(ctx, s.User, "login", c.RealIP(), "role "+string(s.Role)+" via "+s.Via)
	return c.Redirect(http.StatusSeeOther, next)
}

func (d *Dashboard) logout(c echo.Context) error {
	s := sessionOf(c)
	if ck, err := c.Cookie(sessionCookie); err == nil {
		d.o.Auth.Logout(c.Request().Context(), ck.Value)
	}
	clearCookie(c, sessionCookie)
	d.audit(c.Request().Context(), s.User, "logout", c.RealIP(), "")
	return c.Redirect(http.StatusSeeOther, Prefix+"/login")
}
