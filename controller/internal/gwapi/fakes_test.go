package gwapi_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/gwapi"
)

// In-memory stand-ins for the interfaces the rest of the controller provides (sites.yaml keys, the Store).

type fakeKeys map[string]gwapi.GatewayKey

func (k fakeKeys) GatewayKey(_ context.Context, id string) (gwapi.GatewayKey, error) {
	g, ok := k[id]
	if !ok {
		return gwapi.GatewayKey{}, gwapi.ErrUnknownGateway
	}
	return g, nil
}

type fakeNonces struct {
	mu   sync.Mutex
	seen map[string]time.Time // key -> expiry
}

func (n *fakeNonces) PutIfAbsent(_ context.Context, key string, ttl time.Duration) (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.seen == nil {
		n.seen = map[string]time.Time{}
	}
	if exp, ok := n.seen[key]; ok && time.Now().Before(exp) {
		return false, nil
	}
	n.seen[key] = time.Now().Add(ttl)
	return true, nil
}

type fakePolicies struct {
	mu    sync.Mutex
	sites map[string][]byte
}

func (p *fakePolicies) set(site, body string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sites == nil {
		p.sites = map[string][]byte{}
	}
	p.sites[site] = []byte(body)
	return version([]byte(body))
}

func version(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

func (p *fakePolicies) Policy(_ context.Context, site string) ([]byte, string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.sites[site]
	if !ok {
		return nil, "", fmt.Errorf("no policy for site %q", site)
	}
	return b, version(b), nil
}

// fakeSink keeps what a real Store would: events by (gateway, id), and per-session totals from the stop event.
type fakeSink struct {
	mu         sync.Mutex
	heartbeats []heartbeatFrom
	events     map[string]apiclient.SessionEvent
	duplicates int
	stops      map[string]apiclient.SessionEvent // session id -> stop event
}

type heartbeatFrom struct {
	From gwapi.Origin
	HB   apiclient.Heartbeat
}

func (s *fakeSink) Heartbeat(_ context.Context, from gwapi.Origin, hb apiclient.Heartbeat) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.heartbeats = append(s.heartbeats, heartbeatFrom{from, hb})
	return nil
}

func (s *fakeSink) SessionEvent(_ context.Context, from gwapi.Origin, ev apiclient.SessionEvent) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.events == nil {
		s.events = map[string]apiclient.SessionEvent{}
		s.stops = map[string]apiclient.SessionEvent{}
	}
	key := from.Site + "/" + from.Gateway + "/" + ev.ID
	if _, ok := s.events[key]; ok {
		s.duplicates++
		return true, nil
	}
	s.events[key] = ev
	if ev.Kind == apiclient.EventStop {
		s.stops[from.Site+"/"+ev.SessionID] = ev
	}
	return false, nil
}

// totals returns the sessions ended and their bytes down and up, as an operator's dashboard would show them.
func (s *fakeSink) totals() (events, sessions int, down, up uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range s.stops {
		down += ev.BytesDown
		up += ev.BytesUp
	}
	return len(s.events), len(s.stops), down, up
}

type fakeCommands struct {
	mu      sync.Mutex
	pending map[string][]apiclient.Command // site -> commands
	acked   map[string]apiclient.CommandAck
}

func (c *fakeCommands) queue(site string, cmd apiclient.Command) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == nil {
		c.pending = map[string][]apiclient.Command{}
	}
	c.pending[site] = append(c.pending[site], cmd)
}

func (c *fakeCommands) Pending(_ context.Context, site, _ string) ([]apiclient.Command, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]apiclient.Command(nil), c.pending[site]...), nil
}

func (c *fakeCommands) Ack(_ context.Context, site, _ string, ack apiclient.CommandAck) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, cmd := range c.pending[site] {
		if cmd.ID == ack.ID {
			c.pending[site] = append(c.pending[site][:i], c.pending[site][i+1:]...)
			if c.acked == nil {
				c.acked = map[string]apiclient.CommandAck{}
			}
			c.acked[ack.ID] = ack
			return nil
		}
	}
	return gwapi.ErrUnknownCommand
}
