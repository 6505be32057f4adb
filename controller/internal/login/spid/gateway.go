package spid

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/gwapi"
	"github.com/civicwifi/civicwifi/controller/internal/login"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
)

// Register mounts spid/start, spid/grant and spid/idps on the gateway API, behind its signature checks (the site
// and gateway come from the verified request). Answers and refusals are the login package's (Answer).
func (s *SP) Register(gw *gwapi.Server) {
	gw.HandleAuthenticated("POST /v1/sites/{site}"+apiclient.PathSPIDStart, s.ServeStart)
	gw.HandleAuthenticated("POST /v1/sites/{site}"+apiclient.PathSPIDGrant, s.ServeGrant)
	gw.HandleAuthenticated("GET /v1/sites/{site}"+apiclient.PathSPIDIdPs, s.ServeIdPs)
}

// ServeStart answers spid/start: the client must be one of the site's (login.CheckClient) and the site must offer
// SPID.
func (s *SP) ServeStart(ctx context.Context, from gwapi.Origin, _ *http.Request, body []byte) (int, []byte) {
	var req apiclient.SPIDStartRequest
	a, err := func() (apiclient.SPIDStartAnswer, error) {
		if err := json.Unmarshal(body, &req); err != nil {
			return apiclient.SPIDStartAnswer{}, refuse(http.StatusBadRequest, apiclient.CodeBadRequest, "body: %v", err)
		}
		if _, err := s.o.Login.CheckClient(from, req.ClientMAC, req.ClientIP, sites.SPID); err != nil {
			return apiclient.SPIDStartAnswer{}, err
		}
		return s.Start(ctx, from.Site, from.Gateway, req)
	}()
	return s.o.Login.Answer(from, "spid_start", a, err)
}

// ServeGrant answers spid/grant: the login the ACS verified for this state, once, as a grant for the client that
// started it; consent is recorded under the pseudonym.
func (s *SP) ServeGrant(ctx context.Context, from gwapi.Origin, _ *http.Request, body []byte) (int, []byte) {
	g, err := func() (apiclient.Grant, error) {
		var req apiclient.SPIDGrantRequest
		if err := json.Unmarshal(body, &req); err != nil {
			return apiclient.Grant{}, refuse(http.StatusBadRequest, apiclient.CodeBadRequest, "body: %v", err)
		}
		c, err := s.o.Login.CheckClient(from, req.ClientMAC, req.ClientIP, sites.SPID)
		if err != nil {
			return apiclient.Grant{}, err
		}
		v, err := s.Redeem(ctx, from.Site, from.Gateway, req)
		if err != nil {
			return apiclient.Grant{}, err
		}
		if err := s.o.Login.RecordConsent(ctx, v.Site, v.User, apiclient.MethodSPID); err != nil {
			return apiclient.Grant{}, err
		}
		return s.o.Login.Grant(ctx, from, c, v.User, apiclient.MethodSPID, login.Limits{})
	}()
	return s.o.Login.Answer(from, apiclient.MethodSPID, g, err)
}

// ServeIdPs answers spid/idps.
func (s *SP) ServeIdPs(_ context.Context, from gwapi.Origin, _ *http.Request, _ []byte) (int, []byte) {
	return s.o.Login.Answer(from, "spid_idps", s.IdPs(), nil)
}
