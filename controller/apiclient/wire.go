// Package apiclient is the gateway's side of the gateway <-> controller protocol: the wire types, the request
// signing both sides share, key enrollment, and a typed client that signs every request, verifies every answer
// with the controller's key, long-polls for policy and commands, and keeps the last policy on disk so that a
// gateway boots even when the controller is unreachable.
//
// It is the one controller package the gateway imports, so it depends on nothing inside controller/internal.
// The protocol is described in README.md next to this file.
package apiclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// Heartbeat is a gateway's health, sent every HeartbeatInterval. Only the latest one matters, so heartbeats are
// sent directly, not through the outbox.
type Heartbeat struct {
	Version          string    `json:"version"`           // gateway software version
	UptimeSeconds    int64     `json:"uptime_seconds"`    // since the daemon started
	ClientsOnline    int       `json:"clients_online"`    // authorised clients now
	ReconcileRepairs uint64    `json:"reconcile_repairs"` // drift repairs since start (firewall, shaper)
	SentAt           time.Time `json:"sent_at"`           // gateway clock
}

// EventKind is the kind of a session event.
type EventKind string

// The session event kinds.
const (
	EventStart   EventKind = "start"
	EventInterim EventKind = "interim"
	EventStop    EventKind = "stop"
)

// SessionEvent is one accounting record of a resident's session. ID is unique across the fleet (NewEventID), so
// the controller records each event once however often it is delivered. BytesDown and BytesUp are the session's
// totals so far (cumulative, as in RADIUS accounting), never deltas: an interim or stop event replayed or
// delivered out of order cannot make the controller count a byte twice.
type SessionEvent struct {
	ID        string    `json:"id"`
	Kind      EventKind `json:"kind"`
	SessionID string    `json:"session_id"`
	Start     time.Time `json:"start"` // when the session started: the same in each of its events
	At        time.Time `json:"at"`    // when this event happened
	ClientMAC string    `json:"client_mac"`
	User      string    `json:"user,omitempty"`   // pseudonym, never a phone number or fiscal code
	Method    string    `json:"method,omitempty"` // login method: click-through, sms, spid, voucher, operator...
	BytesDown uint64    `json:"bytes_down"`
	BytesUp   uint64    `json:"bytes_up"`
	Reason    string    `json:"reason,omitempty"` // stop only: timeout, idle, quota, kick, ...
}

// MaxBatch is the most events one POST may carry.
const MaxBatch = 500

// Validate reports what is wrong with an event, naming the field.
func (e SessionEvent) Validate() error {
	var errs []error
	if e.ID == "" || len(e.ID) > 64 {
		errs = append(errs, fmt.Errorf("id %q: want 1 to 64 characters", e.ID))
	}
	switch e.Kind {
	case EventStart, EventInterim:
		if e.Reason != "" {
			errs = append(errs, fmt.Errorf("reason %q: only a stop event has a reason", e.Reason))
		}
	case EventStop:
		if e.Reason == "" {
			errs = append(errs, errors.New("reason: a stop event needs one"))
		}
	default:
		errs = append(errs, fmt.Errorf("kind %q: want start, interim or stop", e.Kind))
	}
	if e.SessionID == "" || len(e.SessionID) > 128 {
		errs = append(errs, fmt.Errorf("session_id %q: want 1 to 128 characters", e.SessionID))
	}
	if e.At.IsZero() {
		errs = append(errs, errors.New("at: missing"))
	}
	if !e.Start.IsZero() && e.At.Before(e.Start) {
		errs = append(errs, fmt.Errorf("at %s: before the session's start %s", e.At.Format(time.RFC3339), e.Start.Format(time.RFC3339)))
	}
	if hw, err := net.ParseMAC(e.ClientMAC); err != nil || len(hw) != 6 {
		errs = append(errs, fmt.Errorf("client_mac %q: not a MAC address", e.ClientMAC))
	}
	for name, s := range map[string]string{"user": e.User, "method": e.Method, "reason": e.Reason} {
		if len(s) > 128 {
			errs = append(errs, fmt.Errorf("%s: longer than 128 characters", name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("event %q: %w", e.ID, err)
	}
	return nil
}

// EventBatch is the body of POST /v1/sites/{site}/events.
type EventBatch struct {
	Events []SessionEvent `json:"events"`
}

// EventAck answers an EventBatch: the ids the controller now holds, newly recorded or already known. The gateway
// deletes exactly these from its outbox; anything not listed is sent again.
type EventAck struct {
	Recorded   []string `json:"recorded"`
	Duplicates []string `json:"duplicates"`
}

// CommandKind is the kind of a remote operation.
type CommandKind string

// The remote operations a controller can ask of a gateway.
const (
	CommandKick   CommandKind = "kick"   // end the client's session now
	CommandExtend CommandKind = "extend" // lengthen the client's session by Extend
)

// Command is a remote operation for one gateway's site.
type Command struct {
	ID        string      `json:"id"`
	Kind      CommandKind `json:"kind"`
	ClientMAC string      `json:"client_mac"`
	Extend    Duration    `json:"extend,omitempty"`
	IssuedAt  time.Time   `json:"issued_at"`
}

// CommandList is the answer to GET /v1/sites/{site}/commands.
type CommandList struct {
	Commands []Command `json:"commands"`
}

// CommandAck reports what a gateway did with a command.
type CommandAck struct {
	ID    string `json:"id"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// CommandAcks is the body of POST /v1/sites/{site}/commands/ack.
type CommandAcks struct {
	Acks []CommandAck `json:"acks"`
}

// Duration is a time.Duration written as a Go duration string ("90m") in JSON.
type Duration time.Duration

// MarshalJSON writes d as "1h30m0s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// Policy is a site's effective policy as the controller serves it. Body is the controller's JSON, passed through
// as is; Version is its ETag.
type Policy struct {
	Version   string          `json:"version"`
	Body      json.RawMessage `json:"body"`
	FetchedAt time.Time       `json:"fetched_at"`
	FromCache bool            `json:"-"` // read from the disk cache because the controller was unreachable
}
