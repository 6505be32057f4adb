// Package control is the gateway's local control interface (like ndsctl, but
// typed): a small JSON-over-HTTP API on a unix socket, the client that
// `portal ctl` uses, and the human table / --json renderings of its answers.
// The same Service is what the controller drives remotely later.
package control

import (
	"context"
	"errors"
	"time"
)

// Service is what the gateway daemon implements for the control interface.
type Service interface {
	Status(ctx context.Context) (Status, error)
	Clients(ctx context.Context) ([]Client, error)
	Allow(ctx context.Context, req AllowRequest) (Session, error)
	Kick(ctx context.Context, req KickRequest) (Session, error)
}

// ErrBadRequest marks errors caused by the caller's input (HTTP 400); the
// message says which field is wrong and why. Wrap it: fmt.Errorf("%w: ...", ErrBadRequest).
var ErrBadRequest = errors.New("bad request")

// ErrNotFound marks a client or session that does not exist (HTTP 404).
var ErrNotFound = errors.New("not found")

// Status is the gateway's health summary.
type Status struct {
	Version         string    `json:"version"`
	Site            string    `json:"site"`
	Started         time.Time `json:"started"`
	ClientInterface string    `json:"client_interface"`
	UplinkInterface string    `json:"uplink_interface"`
	Authorised      int       `json:"authorised"`
	Captive         int       `json:"captive"`
	Repairs         uint64    `json:"repairs"`
	LastReconcile   time.Time `json:"last_reconcile"`
	DNSRunning      bool      `json:"dns_running"`
	// The controller link, when the site has a controller.
	Controller *ControllerStatus `json:"controller,omitempty"`
}

// ControllerStatus is the gateway's link to the town's controller.
type ControllerStatus struct {
	URL           string `json:"url"`
	PolicyVersion string `json:"policy_version"` // "" until a policy was applied
	EventsQueued  int    `json:"events_queued"`  // session events not yet acknowledged
}

// Client is one device seen on the client network, with its session if any.
type Client struct {
	MAC      string    `json:"mac"`
	IP       string    `json:"ip"`
	Hostname string    `json:"hostname,omitempty"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	State    string    `json:"state"` // "authorised" or "captive"
	Session  *Session  `json:"session,omitempty"`
}

// Session is one authorised session with its limits and usage.
type Session struct {
	ID          string        `json:"id"`
	MAC         string        `json:"mac"`
	IP          string        `json:"ip"`
	Method      string        `json:"method"` // "ctl", "click-through", ...
	Started     time.Time     `json:"started"`
	Expires     time.Time     `json:"expires,omitzero"`
	IdleTimeout time.Duration `json:"idle_timeout"`
	LastActive  time.Time     `json:"last_active,omitzero"`
	QuotaBytes  uint64        `json:"quota_bytes"`
	DownRate    uint64        `json:"down_rate_bps"`
	UpRate      uint64        `json:"up_rate_bps"`
	BytesDown   uint64        `json:"bytes_down"`
	BytesUp     uint64        `json:"bytes_up"`
	Packets     uint64        `json:"packets"`
	Ended       time.Time     `json:"ended,omitzero"`
	EndReason   string        `json:"end_reason,omitempty"` // "expired", "idle", "quota", "kicked"
}

// AllowRequest opens a session. MAC or IP (or both) identify the client; the
// other is looked up from what the gateway has seen on the wire. Zero limits
// take the gateway's defaults; the strings use the sites.yaml notation
// ("2h", "5mbit", "500MB").
type AllowRequest struct {
	MAC      string `json:"mac,omitempty"`
	IP       string `json:"ip,omitempty"`
	Duration string `json:"duration,omitempty"`
	Idle     string `json:"idle,omitempty"`
	Quota    string `json:"quota,omitempty"`
	Down     string `json:"down,omitempty"`
	Up       string `json:"up,omitempty"`
	Method   string `json:"method,omitempty"`
}

// KickRequest ends a session by MAC or IP.
type KickRequest struct {
	MAC    string `json:"mac,omitempty"`
	IP     string `json:"ip,omitempty"`
	Reason string `json:"reason,omitempty"`
}
