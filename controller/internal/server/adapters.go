package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/apapi"
	"github.com/civicwifi/civicwifi/controller/internal/gwapi"
	"github.com/civicwifi/civicwifi/controller/internal/store"
)

// keyRetry is how often a gateway key that could not be read is tried again (a key file installed after the
// sites.yaml line that names it starts working without a reload).
const keyRetry = 5 * time.Second

// keys implements gwapi.Keys from the current sites.yaml and the key files it references.
type keys struct {
	srv   *Server
	retry time.Duration // keyRetry; tests shorten it
	mu    sync.Mutex
	m     map[string]keyEntry // by gateway id
}

type keyEntry struct {
	gatewayEntry
	key   gwapi.GatewayKey
	err   error
	tried time.Time
}

// reset re-reads every gateway's key for snap and reports the ones that cannot be read.
func (k *keys) reset(snap *snapshot) []error {
	m := map[string]keyEntry{}
	var errs []error
	now := time.Now()
	for id, g := range snap.gateways {
		e := keyEntry{gatewayEntry: g, tried: now}
		pub, err := readGatewayKey(g.ref)
		if err != nil {
			e.err = err
			errs = append(errs, fmt.Errorf("gateway %s of site %s: %w", id, g.site, err))
		} else {
			e.key = gwapi.GatewayKey{PublicKey: pub, Site: g.site}
		}
		m[id] = e
	}
	k.mu.Lock()
	k.m = m
	k.mu.Unlock()
	return errs
}

func (k *keys) GatewayKey(_ context.Context, id string) (gwapi.GatewayKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.m[id]
	if !ok {
		return gwapi.GatewayKey{}, gwapi.ErrUnknownGateway
	}
	if e.err != nil && time.Since(e.tried) >= k.retry {
		e.tried = time.Now()
		pub, err := readGatewayKey(e.ref)
		e.err = err
		if err == nil {
			e.key = gwapi.GatewayKey{PublicKey: pub, Site: e.site}
			k.srv.log.Info("gateway key read", "gateway", id, "site", e.site)
		}
		k.m[id] = e
	}
	if e.err != nil {
		return gwapi.GatewayKey{}, fmt.Errorf("%w: %s has no readable key", gwapi.ErrUnknownGateway, id)
	}
	return e.key, nil
}

// nonces implements gwapi.Nonces on the store's ephemeral keys (shared by replicas on one Redis).
type nonces struct{ st store.Store }

func (n nonces) PutIfAbsent(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	return n.st.PutIfAbsent(ctx, key, []byte{1}, ttl)
}

// policies implements gwapi.Policies from the current snapshot.
type policies struct{ srv *Server }

func (p policies) Policy(_ context.Context, site string) ([]byte, string, error) {
	doc, ok := p.srv.snap.Load().policies[site]
	if !ok {
		return nil, "", fmt.Errorf("site %s is no longer in sites.yaml", site)
	}
	return doc.body, doc.version, nil
}

// sink implements gwapi.Sink: heartbeats become the gateway's health in the store, session events the store's
// idempotent session events.
type sink struct{ st store.Store }

func (s sink) Heartbeat(ctx context.Context, from gwapi.Origin, hb apiclient.Heartbeat) error {
	h := store.GatewayHealth{
		Version: hb.Version[:min(len(hb.Version), store.MaxFieldLen)], Uptime: time.Duration(hb.UptimeSeconds) * time.Second,
		ClientsOnline: hb.ClientsOnline, ReconcileRepairs: int64(min(hb.ReconcileRepairs, 1<<62)),
		Extra: map[string]string{"site": from.Site, "remote": from.Remote},
	}
	return s.st.Heartbeat(ctx, from.Gateway, time.Now(), h)
}

// SessionEvent records ev under ids scoped to the sending gateway: ids are chosen by gateways, and one gateway
// must never be able to touch (or pre-empt) another's sessions or events.
func (s sink) SessionEvent(ctx context.Context, from gwapi.Origin, ev apiclient.SessionEvent) (bool, error) {
	sev := store.SessionEvent{
		ID: scopedID(from.Gateway, ev.ID), Kind: store.EventKind(ev.Kind), SessionID: scopedID(from.Gateway, ev.SessionID),
		GatewayID: from.Gateway, SiteID: from.Site, ClientMAC: ev.ClientMAC,
		UserID: safeID(ev.User), Method: safeID(ev.Method), Start: ev.Start, At: ev.At,
		BytesDown: ev.BytesDown, BytesUp: ev.BytesUp, Reason: ev.Reason[:min(len(ev.Reason), store.MaxFieldLen)],
	}
	dup, err := s.st.RecordEvent(ctx, sev)
	if errors.Is(err, store.ErrInvalid) {
		// The gateway was moved to another site in sites.yaml during the session: the session (its id scoped to
		// this gateway, so this gateway's) stays counted at the site where it started. Refusing the event would
		// block the gateway's outbox behind it for good.
		if prev, perr := s.st.Session(ctx, sev.SessionID); perr == nil && prev.GatewayID == from.Gateway && prev.SiteID != from.Site {
			sev.SiteID = prev.SiteID
			return s.st.RecordEvent(ctx, sev)
		}
	}
	return dup, err
}

// scopedID is "gateway.id" as the store keeps it, or a hash of it when that is not a valid store token.
func scopedID(gateway, id string) string {
	s := gateway + "." + id
	if store.CheckToken("id", s) == nil {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return gateway + ".h" + hex.EncodeToString(sum[:16])
}

// safeID passes a valid store token through and hashes anything else (control characters, too long).
func safeID(s string) string {
	if s == "" || store.CheckToken("id", s) == nil {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return "h" + hex.EncodeToString(sum[:16])
}

// commands implements gwapi.Commands on the store's per-gateway queues.
type commands struct{ srv *Server }

func (c commands) Pending(ctx context.Context, site, gatewayID string) ([]apiclient.Command, error) {
	cmds, err := c.srv.st.Pending(ctx, gatewayID)
	if err != nil {
		return nil, err
	}
	out := make([]apiclient.Command, 0, len(cmds))
	for _, x := range cmds {
		out = append(out, apiclient.Command{
			ID: x.ID, Kind: apiclient.CommandKind(x.Kind), ClientMAC: x.ClientMAC,
			Extend: apiclient.Duration(x.Extend), IssuedAt: x.Created,
		})
	}
	return out, nil
}

func (c commands) Ack(ctx context.Context, site, gatewayID string, ack apiclient.CommandAck) error {
	was, err := c.srv.st.Ack(ctx, gatewayID, ack.ID)
	if err != nil {
		return err
	}
	if !was {
		return gwapi.ErrUnknownCommand
	}
	detail := "ok"
	if !ack.OK {
		detail = "failed: " + ack.Error[:min(len(ack.Error), 200)]
	}
	if err := c.srv.st.AppendAudit(ctx, store.AuditEntry{
		At: time.Now(), Actor: "gateway " + gatewayID, Action: "command.done", Target: ack.ID, Detail: detail,
	}); err != nil {
		c.srv.log.Warn("auditing a command ack", "gateway", gatewayID, "command", ack.ID, "err", err)
	}
	return nil
}

// registry implements apapi.Registry. An AP's record (with the hash of its secret) is kept under an ephemeral
// key with a ten-year TTL, the store's only keyed record that a Lua script / bbolt transaction creates
// atomically; each check-in is also recorded in the store's AccessPoints, which dashboards read.
type registry struct{ srv *Server }

const apRecordTTL = 10 * 365 * 24 * time.Hour

func apKey(mac string) string { return "apapi/ap/" + mac }

func (r registry) CreateAP(ctx context.Context, rec apapi.Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ok, err := r.srv.st.PutIfAbsent(ctx, apKey(rec.MAC), b, apRecordTTL)
	if err != nil {
		return err
	}
	if !ok {
		return apapi.ErrExists
	}
	return nil
}

func (r registry) GetAP(ctx context.Context, mac string) (apapi.Record, error) {
	b, err := r.srv.st.Get(ctx, apKey(mac))
	if errors.Is(err, store.ErrNotFound) {
		return apapi.Record{}, apapi.ErrUnknownAP
	}
	if err != nil {
		return apapi.Record{}, err
	}
	var rec apapi.Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return apapi.Record{}, fmt.Errorf("decoding the record of %s: %w", mac, err)
	}
	return rec, nil
}

func (r registry) PutAP(ctx context.Context, rec apapi.Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := r.srv.st.Put(ctx, apKey(rec.MAC), b, apRecordTTL); err != nil {
		return err
	}
	if rec.LastCheckin.IsZero() {
		return nil
	}
	st := store.APState{Firmware: rec.Firmware, Uptime: rec.Uptime, Clients: rec.Clients}
	for _, rs := range rec.Radios {
		st.Radios = append(st.Radios, store.Radio{Name: rs.Interface, Up: true, Channel: rs.Channel, TxPower: rs.TxPowerDBm, SSID: rs.SSID})
	}
	return r.srv.st.CheckIn(ctx, rec.MAC, rec.LastCheckin, st, rec.AppliedVersion)
}

func (r registry) DeleteAP(ctx context.Context, mac string) error {
	return r.srv.st.Delete(ctx, apKey(mac))
}

// ForgetAP deletes an access point's enrollment record from st, so that it can enroll again with the installation's
// token (after a factory reset, or a replacement with the same MAC): apapi refuses to enroll a MAC twice. It
// returns store.ErrNotFound (wrapped) for an AP that is not enrolled.
func ForgetAP(ctx context.Context, st store.Store, mac string) error {
	m, err := apapi.NormalizeMAC(mac)
	if err != nil {
		return err
	}
	if _, err := st.Get(ctx, apKey(m)); err != nil {
		return fmt.Errorf("forgetting access point %s: %w", m, err)
	}
	if err := st.Delete(ctx, apKey(m)); err != nil {
		return fmt.Errorf("forgetting access point %s: %w", m, err)
	}
	return nil
}

// ListAPs lists the enrolled APs among those of sites.yaml and those that ever checked in.
func (r registry) ListAPs(ctx context.Context) ([]apapi.Record, error) {
	macs := map[string]bool{}
	for mac := range r.srv.snap.Load().desired {
		macs[mac] = true
	}
	seen, err := r.srv.st.ListAccessPoints(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range seen {
		macs[a.MAC] = true
	}
	var out []apapi.Record
	for mac := range macs {
		rec, err := r.GetAP(ctx, mac)
		if errors.Is(err, apapi.ErrUnknownAP) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

// desired implements apapi.DesiredSource from the current snapshot.
type desired struct{ srv *Server }

func (d desired) DesiredAP(mac string) (apapi.Config, bool) {
	c, ok := d.srv.snap.Load().desired[mac]
	return c, ok
}
