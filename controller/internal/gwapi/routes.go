package gwapi

import (
	"context"
	"net/http"
)

// AuthHandler serves one extra gateway route (the resident login endpoints, for instance). It runs only after the
// request passed every check of the built-in routes (signature, key, clock, nonce, site), receives the verified
// Origin and the body, and returns the status and body of the answer, which the Server signs. body is only valid
// during the call. A nil answer body is sent empty.
type AuthHandler func(ctx context.Context, from Origin, r *http.Request, body []byte) (status int, answer []byte)

// HandleAuthenticated registers h under pattern, a http.ServeMux pattern that must contain the {site} wildcard
// (e.g. "POST /v1/sites/{site}/login/sms/start"): a request whose {site} is not its gateway's site is refused
// with 403 before h runs. Register routes before serving.
func (s *Server) HandleAuthenticated(pattern string, h AuthHandler) {
	s.mux.Handle(pattern, s.authenticated(func(w http.ResponseWriter, r *http.Request, req request) {
		status, body := h(r.Context(), req.from, r, req.body)
		if r.Context().Err() != nil && status >= 500 {
			return // the gateway went away
		}
		s.reply(w, req, status, "", body)
	}))
}
