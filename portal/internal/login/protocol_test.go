package login

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/portal/internal/captive"
)

// protoController speaks the controller's side of the signed gateway
// protocol over real HTTP: it checks each request's Ed25519 signature
// against the gateway's key and signs each answer with its own, as the
// controller does; the login logic behind it is a script.
type protoController struct {
	t      testing.TB
	gwKey  ed25519.PublicKey
	key    ed25519.PrivateKey // answers and grants
	mu     sync.Mutex
	bodies map[string][]byte // path -> last request body
	answer map[string]func(body []byte) (int, any)
	sigKey ed25519.PrivateKey // answers are signed with this one (an impostor's, in one test)
}

func (c *protoController) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	ts, _ := strconv.ParseInt(r.Header.Get(apiclient.HeaderTimestamp), 10, 64)
	msg, err := apiclient.SignedRequest{
		Gateway: r.Header.Get(apiclient.HeaderGateway), Method: r.Method, Target: r.RequestURI,
		Timestamp: ts, Nonce: r.Header.Get(apiclient.HeaderNonce), BodySHA256: sha256.Sum256(body),
	}.AppendMessage(nil)
	sig, _ := apiclient.DecodeSignature(r.Header.Get(apiclient.HeaderSignature))
	if err != nil || r.Header.Get(apiclient.HeaderGateway) != gwID || !ed25519.Verify(c.gwKey, msg, sig) {
		c.t.Errorf("%s %s: request not signed by the gateway", r.Method, r.RequestURI)
		http.Error(w, "unsigned", http.StatusUnauthorized)
		return
	}
	path := strings.TrimPrefix(r.URL.Path, "/v1/sites/"+site)
	c.mu.Lock()
	c.bodies[path] = body
	fn := c.answer[path]
	c.mu.Unlock()
	status, v := http.StatusNotFound, any(apiclient.LoginError{Code: "bad_request"})
	if fn != nil {
		status, v = fn(body)
	}
	out, _ := json.Marshal(v)
	rmsg, _ := apiclient.SignedResponse{Gateway: gwID, Nonce: r.Header.Get(apiclient.HeaderNonce), Status: status, BodySHA256: sha256.Sum256(out)}.AppendMessage(nil)
	w.Header().Set(apiclient.HeaderSignature, apiclient.EncodeSignature(ed25519.Sign(c.sigKey, rmsg)))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(out)
}

func (c *protoController) body(path string) map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	var m map[string]any
	json.Unmarshal(c.bodies[path], &m)
	return m
}

// The real apiclient.Client between the login service and a controller
// that speaks the real protocol over HTTP: the SMS walk, a 404 refusal, a
// 429 with its retry time, and answers signed by another key (an impostor
// between gateway and controller) refused as a failure, not a login.
func TestOverTheWire(t *testing.T) {
	gwPub, gwPriv, _ := ed25519.GenerateKey(rand.Reader)
	ctlPub, ctlPriv, _ := ed25519.GenerateKey(rand.Reader)
	pc := &protoController{t: t, gwKey: gwPub, key: ctlPriv, sigKey: ctlPriv, bodies: map[string][]byte{}, answer: map[string]func([]byte) (int, any){}}
	ts := httptest.NewServer(pc)
	t.Cleanup(ts.Close)
	client, err := apiclient.New(apiclient.Config{BaseURL: ts.URL, Site: site, GatewayID: gwID, Key: gwPriv, ControllerKey: ctlPub})
	if err != nil {
		t.Fatal(err)
	}
	gw := newFakeGateway(t, t.TempDir())
	mac, _ := net.ParseMAC(phoneHW)
	gw.macs[netip.MustParseAddr(phoneIP)] = mac
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := New(Config{Site: site, GatewayID: gwID, ControllerKey: ctlPub, StateDir: t.TempDir()}, client, gw, log)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := captive.New(captive.Config{
		GatewayIP: netip.MustParseAddr("10.20.0.1"), HTTPPort: 2050, HTTPSPort: 2443, SiteName: "Parco Pertini",
		Key: []byte("0123456789abcdef0123456789abcdef"), Login: svc,
	}, gw, log)
	if err != nil {
		t.Fatal(err)
	}
	srv.SetOffer(captive.Offer{Methods: []string{"sms"}, RememberDevice: true})
	h := &harness{t: t, srv: srv, gw: gw, lang: "it"}

	pc.answer["/login/sms/start"] = func([]byte) (int, any) {
		return 200, apiclient.SMSStartAnswer{RequestID: "req-1", ResendAfterS: 45, ExpiresS: 600}
	}
	pc.answer["/login/sms/verify"] = func(b []byte) (int, any) {
		var req apiclient.SMSVerifyRequest
		json.Unmarshal(b, &req)
		if req.Code != "246810" {
			return 400, apiclient.LoginError{Code: "wrong_code", Message: "wrong code", TriesLeft: 2}
		}
		now := time.Now()
		g := apiclient.Grant{ID: "grant-1", Site: site, GatewayID: gwID, ClientMAC: req.ClientMAC, ClientIP: req.ClientIP,
			User: "PSEUDO", Method: "sms", IssuedAt: now, ExpiresAt: now.Add(apiclient.GrantTTL)}
		if err := apiclient.SignGrant(&g, pc.key); err != nil {
			t.Error(err)
		}
		return 200, g
	}
	pc.answer["/login/remembered"] = func([]byte) (int, any) {
		return 404, apiclient.LoginError{Code: "not_remembered", Message: "unknown device"}
	}

	land := h.get("/portal/")
	f := land.hidden(t, "/portal/sms")
	f.Set("phone", "+39 333 123 4567")
	f.Set("accept", "1")
	code := h.post("/portal/sms", f)
	status(t, code, 200)
	start := pc.body("/login/sms/start")
	if start["phone"] != "+39 333 123 4567" || start["consent"] != true || start["client_mac"] != phoneHW || start["client_ip"] != phoneIP || start["lang"] != "it" {
		t.Errorf("sms/start body %v", start)
	}
	if !code.has("Potrai chiedere un nuovo codice tra 45 secondi.") {
		t.Error("the code page does not show the controller's cool-down")
	}
	v := code.hidden(t, "/portal/sms/verify")
	v.Set("code", "111111")
	wrong := h.post("/portal/sms/verify", v)
	status(t, wrong, http.StatusBadRequest)
	if !wrong.has("Il codice non è corretto. Tentativi rimasti: 2.") {
		t.Errorf("wrong code page:\n%s", wrong.body)
	}
	v.Set("code", "246810")
	ok := h.post("/portal/sms/verify", v)
	status(t, ok, http.StatusSeeOther)
	if o := gw.openedList(); len(o) != 1 || o[0].User != "PSEUDO" || o[0].Method != "sms" {
		t.Fatalf("opened %+v", o)
	}
	if b := pc.body("/login/sms/verify"); b["request_id"] != "req-1" || b["code"] != "246810" {
		t.Errorf("sms/verify body %v", b)
	}
	// The same grant a second time (a replayed answer) opens nothing.
	again := h.post("/portal/sms/verify", v)
	status(t, again, http.StatusForbidden)
	if len(gw.openedList()) != 1 {
		t.Error("a replayed grant opened a session")
	}

	// 404 not_remembered.
	gw.Logout(context.Background(), netip.MustParseAddr(phoneIP))
	r := h.post("/portal/remembered", h.get("/portal/").hidden(t, "/portal/remembered"))
	status(t, r, http.StatusBadRequest)
	if !r.has("Questo dispositivo non è memorizzato") {
		t.Errorf("not remembered page:\n%s", r.body)
	}
	// 429 with the retry time.
	pc.answer["/login/sms/start"] = func([]byte) (int, any) {
		return 429, apiclient.LoginError{Code: "rate_limited", RetryAfterSeconds: 120}
	}
	p := h.post("/portal/sms", f)
	status(t, p, http.StatusTooManyRequests)
	if !p.has("Troppi tentativi. Riprova tra 120 secondi.") {
		t.Errorf("rate limited page:\n%s", p.body)
	}
	// An impostor signs the answers: the client refuses them; the resident
	// sees the service unavailable, nothing opens.
	_, impostor, _ := ed25519.GenerateKey(rand.Reader)
	pc.mu.Lock()
	pc.sigKey = impostor
	pc.mu.Unlock()
	pc.answer["/login/sms/verify"] = func(b []byte) (int, any) {
		var req apiclient.SMSVerifyRequest
		json.Unmarshal(b, &req)
		now := time.Now()
		g := apiclient.Grant{ID: "grant-2", Site: site, GatewayID: gwID, ClientMAC: req.ClientMAC, ClientIP: req.ClientIP,
			User: "X", Method: "sms", IssuedAt: now, ExpiresAt: now.Add(apiclient.GrantTTL)}
		apiclient.SignGrant(&g, impostor)
		return 200, g
	}
	p = h.post("/portal/sms/verify", v)
	status(t, p, http.StatusServiceUnavailable)
	if len(gw.openedList()) != 1 {
		t.Error("an impostor's grant opened a session")
	}
}
