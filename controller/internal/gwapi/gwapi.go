// Package gwapi is the controller's side of the gateway protocol (controller/apiclient/README.md): it
// authenticates every gateway request by its Ed25519 signature, refuses unknown gateways, stale timestamps,
// replayed nonces and requests for another site, serves each site's policy with ETag and long poll, takes
// heartbeats and session events, hands out remote commands, and signs every answer with the controller's key.
//
// It owns no state: what it needs from the rest of the controller is behind the small interfaces below.
package gwapi

import (
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/prometheus/client_golang/prometheus"
)

// GatewayKey is what the controller knows about an enrolled gateway.
type GatewayKey struct {
	PublicKey ed25519.PublicKey
	Site      string // the only site this gateway may read or write
}

// ErrUnknownGateway is returned by Keys for a gateway id that is not enrolled.
var ErrUnknownGateway = errors.New("unknown gateway")

// ErrUnknownCommand is returned by Commands.Ack for an id that is not pending for that site and gateway.
var ErrUnknownCommand = errors.New("unknown command")

// Keys looks up an enrolled gateway (from sites.yaml and its key files).
type Keys interface {
	GatewayKey(ctx context.Context, gatewayID string) (GatewayKey, error) // ErrUnknownGateway if none
}

// Nonces remembers nonces: PutIfAbsent stores key for ttl and reports whether it was new. Shared by all
// controller replicas (Redis SET NX PX), so a request replayed to another replica is refused too.
type Nonces interface {
	PutIfAbsent(ctx context.Context, key string, ttl time.Duration) (bool, error)
}

// Policies returns a site's effective policy as JSON, and a version that changes whenever the bytes do (a hash
// of them will do). Version must be printable ASCII without '"'.
type Policies interface {
	Policy(ctx context.Context, site string) (body []byte, version string, err error)
}

// Origin says who sent something: site and gateway come from the verified key, never from the request.
type Origin struct {
	Site    string
	Gateway string
	Remote  string // remote address as seen by the controller
}

// Sink receives what gateways report. SessionEvent must be idempotent by event id (per gateway): it reports
// duplicate=true, and changes nothing, for an id it already holds.
type Sink interface {
	Heartbeat(ctx context.Context, from Origin, hb apiclient.Heartbeat) error
	SessionEvent(ctx context.Context, from Origin, ev apiclient.SessionEvent) (duplicate bool, err error)
}

// Commands holds remote operations waiting for a site's gateways.
type Commands interface {
	// Pending returns the commands not yet acked that this gateway of this site should run.
	Pending(ctx context.Context, site, gatewayID string) ([]apiclient.Command, error)
	// Ack records the result and stops offering the command; ErrUnknownCommand if it is not this site's.
	Ack(ctx context.Context, site, gatewayID string, ack apiclient.CommandAck) error
}

// Config configures a Server. Keys, Nonces, Policies, Sink, Commands and SigningKey are required.
type Config struct {
	Keys       Keys
	Nonces     Nonces
	Policies   Policies
	Sink       Sink
	Commands   Commands
	SigningKey ed25519.PrivateKey // the controller's response-signing key (shared by replicas)

	Log        *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: no metrics
	MaxWait    time.Duration         // longest long poll; zero: 30 s
	Recheck    time.Duration         // a long poll also re-reads this often without a notify; zero: never (see README)
	MaxBody    int64                 // largest request body; zero: 1 MiB
	Now        func() time.Time      // nil: time.Now
}
