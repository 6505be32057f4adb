package spid

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/gwapi"
)

// Issuer makes the signed grant (method "spid") for a verified login: the login package's helper, which applies
// the site's limits, picks the id and expiry, records consent and signs.
type Issuer func(ctx context.Context, v Verified) (apiclient.Grant, error)

// The gateway-facing endpoints. Each has the signature of gwapi.AuthHandler, so the controller mounts them behind
// the gateway API's signature checks (the site and gateway come from the verified Origin):
//
//	gw.HandleAuthenticated("POST /v1/sites/{site}"+apiclient.PathSPIDStart, sp.ServeStart)
//	gw.HandleAuthenticated("POST /v1/sites/{site}"+apiclient.PathSPIDGrant, sp.ServeGrant)
//	gw.HandleAuthenticated("GET /v1/sites/{site}"+apiclient.PathSPIDIdPs, sp.ServeIdPs)
//
// Refusals are 4xx (or 503) with an apiclient.LoginError body.

// ServeStart answers spid/start.
func (s *SP) ServeStart(ctx context.Context, from gwapi.Origin, _ *http.Request, body []byte) (int, []byte) {
	var req apiclient.SPIDStartRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return answerError(refuse(http.StatusBadRequest, apiclient.CodeBadRequest, "body: %v", err))
	}
	a, err := s.Start(ctx, from.Site, from.Gateway, req)
	if err != nil {
		return s.answerError(err)
	}
	return answer(http.StatusOK, a)
}

// ServeGrant answers spid/grant with a grant from Options.Issuer.
func (s *SP) ServeGrant(ctx context.Context, from gwapi.Origin, _ *http.Request, body []byte) (int, []byte) {
	var req apiclient.SPIDGrantRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return answerError(refuse(http.StatusBadRequest, apiclient.CodeBadRequest, "body: %v", err))
	}
	if s.o.Issuer == nil {
		s.log.Error("spid/grant: no grant issuer configured")
		return answerError(refuse(http.StatusServiceUnavailable, apiclient.CodeUnavailable, "no grant issuer"))
	}
	v, err := s.Redeem(ctx, from.Site, from.Gateway, req)
	if err != nil {
		return s.answerError(err)
	}
	g, err := s.o.Issuer(ctx, v)
	if err != nil {
		return s.answerError(err)
	}
	return answer(http.StatusOK, g)
}

// ServeIdPs answers spid/idps.
func (s *SP) ServeIdPs(context.Context, gwapi.Origin, *http.Request, []byte) (int, []byte) {
	return answer(http.StatusOK, s.IdPs())
}

func (s *SP) answerError(err error) (int, []byte) {
	var le *apiclient.LoginError
	if errors.As(err, &le) {
		return answerError(le)
	}
	s.log.Error("spid login", "err", err)
	return answerError(refuse(http.StatusServiceUnavailable, apiclient.CodeUnavailable, "temporarily unavailable"))
}

func answerError(le *apiclient.LoginError) (int, []byte) {
	status := le.Status
	if status == 0 {
		status = http.StatusBadRequest
	}
	return answer(status, le)
}

func answer(status int, v any) (int, []byte) {
	b, err := json.Marshal(v)
	if err != nil {
		return http.StatusInternalServerError, nil
	}
	return status, b
}
