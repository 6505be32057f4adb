package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/server"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/civicwifi/civicwifi/internal/redistest"
	"github.com/google/go-cmp/cmp"
)

// TestTwoReplicasOneRedis runs two controllers on one Redis for the same gateway: a request replayed to the
// other replica is refused, both serve the same policy version, a command queued on one wakes the gateway's long
// poll on the other, and after one is stopped (with a long poll
// held on it) the other serves everything the first one took: events are not counted twice and a command
// queued through the first is delivered by the second.
func TestTwoReplicasOneRedis(t *testing.T) {
	r := redistest.Start(t)
	t.Setenv(server.EnvRedisPassword, r.Password)
	l := newLab(t, "redis://"+r.Addr+"/0")
	a := startController(t, l.configPath)
	b := startController(t, l.configPath)
	ctx := context.Background()
	gwA := l.client(t, a.base, "parco", "parco-gw1")
	gwB := l.client(t, b.base, "parco", "parco-gw1")

	pa, _, err := gwA.FetchPolicy(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	pb, _, err := gwB.FetchPolicy(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if pa.Version != pb.Version || string(pa.Body) != string(pb.Body) {
		t.Errorf("replicas serve different policies: %s %s / %s %s", pa.Version, pa.Body, pb.Version, pb.Body)
	}

	// One signed request, sent to A and then replayed to B: B refuses it (the nonce is in Redis).
	body := []byte(`{"version":"1","uptime_seconds":1,"clients_online":1,"reconcile_repairs":0,"sent_at":"2026-01-01T00:00:00Z"}`)
	target := "/v1/sites/parco/heartbeat"
	ts, nonce := time.Now().Unix(), apiclient.NewNonce()
	msg, err := apiclient.SignedRequest{Gateway: "parco-gw1", Method: http.MethodPost, Target: target, Timestamp: ts,
		Nonce: nonce, BodySHA256: sha256.Sum256(body)}.AppendMessage(nil)
	if err != nil {
		t.Fatal(err)
	}
	sig := apiclient.EncodeSignature(ed25519.Sign(l.gwKey["parco-gw1"], msg))
	send := func(base string) int {
		req, _ := http.NewRequest(http.MethodPost, base+target, strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(apiclient.HeaderGateway, "parco-gw1")
		req.Header.Set(apiclient.HeaderTimestamp, strconv.FormatInt(ts, 10))
		req.Header.Set(apiclient.HeaderNonce, nonce)
		req.Header.Set(apiclient.HeaderSignature, sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := send(a.base); got != http.StatusNoContent {
		t.Fatalf("signed heartbeat to A: %d", got)
	}
	if got := send(b.base); got != http.StatusUnauthorized {
		t.Errorf("the same request replayed to B: %d, want 401", got)
	}

	// A kick queued on A wakes the command long poll the gateway holds on B at once (Redis pub/sub).
	type polled struct {
		cmds []apiclient.Command
		err  error
		at   time.Time
	}
	poll := make(chan polled, 1)
	go func() {
		cmds, err := gwB.Commands(ctx, 20*time.Second)
		poll <- polled{cmds, err, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond) // the poll waits on B
	queuedAt := time.Now()
	k1, err := a.srv.EnqueueCommand(ctx, "parco", store.Command{Kind: store.CommandKick, ClientMAC: "aa:bb:cc:00:00:08"}, "test")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-poll:
		if p.err != nil || len(p.cmds) != 1 || p.cmds[0].ID != k1[0].ID {
			t.Fatalf("B's command poll: %+v %v", p.cmds, p.err)
		}
		t.Logf("a kick queued on A reached the gateway polling B in %v", p.at.Sub(queuedAt))
		if d := p.at.Sub(queuedAt); d > time.Second {
			t.Errorf("the kick took %v to cross replicas, want under 1 s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a kick queued on A did not reach the gateway polling B within 5 s")
	}
	if err := gwB.AckCommands(ctx, []apiclient.CommandAck{{ID: k1[0].ID, OK: true}}); err != nil {
		t.Fatal(err)
	}

	// A takes a session's events and queues a kick; then A stops while a long poll waits on it.
	at := time.Now().Add(-time.Hour).Truncate(time.Second)
	first := sessionEvents("s1", "aa:bb:cc:00:00:01", at)
	if ack, err := gwA.SendEvents(ctx, first); err != nil || len(ack.Recorded) != 3 {
		t.Fatalf("events to A: %+v %v", ack, err)
	}
	queued, err := a.srv.EnqueueCommand(ctx, "parco", store.Command{Kind: store.CommandKick, ClientMAC: "aa:bb:cc:00:00:09"}, "test")
	if err != nil || len(queued) != 1 {
		t.Fatalf("queueing a kick: %v %v", queued, err)
	}
	held := make(chan error, 1)
	go func() {
		_, _, err := gwA.FetchPolicy(ctx, pa.Version, 25*time.Second)
		held <- err
	}()
	time.Sleep(200 * time.Millisecond)
	if code := a.stop(); code != 0 {
		t.Errorf("A exit code %d\n%s", code, a.logs)
	}
	select {
	case err := <-held:
		if err == nil {
			t.Errorf("the long poll held on A returned no error after A stopped")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll held on A did not end when A stopped")
	}

	// The gateway moves to B and sends again everything it had not seen acked, plus a new session.
	second := sessionEvents("s2", "aa:bb:cc:00:00:02", at.Add(10*time.Minute))
	ack, err := gwB.SendEvents(ctx, append(append([]apiclient.SessionEvent{}, first...), second...))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(apiclient.EventAck{Recorded: ids(second), Duplicates: ids(first)}, ack); diff != "" {
		t.Errorf("events to B (-want +got):\n%s", diff)
	}
	tot, err := b.st.SiteTotals(ctx, "parco")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(store.Totals{Sessions: 2, BytesDown: 18000, BytesUp: 1800}, tot); diff != "" {
		t.Errorf("totals (-want +got):\n%s", diff)
	}
	cmds, err := gwB.Commands(ctx, 5*time.Second)
	if err != nil || len(cmds) != 1 || cmds[0].ID != queued[0].ID {
		t.Fatalf("commands from B: %+v %v (want %s)", cmds, err, queued[0].ID)
	}
	if err := gwB.AckCommands(ctx, []apiclient.CommandAck{{ID: cmds[0].ID, OK: true}}); err != nil {
		t.Fatal(err)
	}
	if p, changed, err := gwB.FetchPolicy(ctx, pa.Version, 0); err != nil || changed || p.Version != pa.Version {
		t.Errorf("B's policy after A stopped: %v changed=%v err=%v", p.Version, changed, err)
	}
	if code := b.stop(); code != 0 {
		t.Errorf("B exit code %d\n%s", code, b.logs)
	}
}
