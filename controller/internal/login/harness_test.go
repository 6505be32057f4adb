package login_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/gwapi"
	"github.com/civicwifi/civicwifi/controller/internal/login"
	"github.com/civicwifi/civicwifi/controller/internal/login/pepper"
	"github.com/civicwifi/civicwifi/controller/internal/login/sms"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/stats"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/civicwifi/civicwifi/controller/internal/store/boltstore"
	"github.com/civicwifi/civicwifi/controller/internal/store/redisstore"
	"github.com/civicwifi/civicwifi/internal/redistest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// clock is the login flows' time; tests move it forward (the gateway protocol keeps real time).
type clock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// syncBuffer collects the controller's log lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type keys map[string]gwapi.GatewayKey

func (k keys) GatewayKey(_ context.Context, id string) (gwapi.GatewayKey, error) {
	g, ok := k[id]
	if !ok {
		return gwapi.GatewayKey{}, gwapi.ErrUnknownGateway
	}
	return g, nil
}

type nonces struct{ st store.Ephemeral }

func (n nonces) PutIfAbsent(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	return n.st.PutIfAbsent(ctx, key, nil, ttl)
}

type nothing struct{}

func (nothing) Policy(context.Context, string) ([]byte, string, error) {
	return []byte("{}"), "v1", nil
}
func (nothing) Heartbeat(context.Context, gwapi.Origin, apiclient.Heartbeat) error {
	return nil
}
func (nothing) SessionEvent(context.Context, gwapi.Origin, apiclient.SessionEvent) (bool, error) {
	return false, nil
}
func (nothing) Pending(context.Context, string, string) ([]apiclient.Command, error) { return nil, nil }
func (nothing) Ack(context.Context, string, string, apiclient.CommandAck) error      { return nil }

// env is one controller (gateway API + login endpoints over a real store, on loopback) and a signed client for
// each gateway of testdata/sites.yaml.
type env struct {
	t        testing.TB
	st       store.Store
	clock    *clock
	log      *syncBuffer
	reg      *prometheus.Registry
	ctlPub   ed25519.PublicKey
	gw       map[string]*apiclient.Client // by site
	gwID     map[string]string            // site -> gateway id
	provider *fakeProvider
	pepper   pepper.Pepper
	url      string
	dump     func() string // every byte the store holds, as text
	gwKeys   map[string]ed25519.PrivateKey
}

type envOpts struct {
	store    string // bolt (default) or redis
	provider string // twilio (default), skebby, webhook, log
	limits   sms.Limits
	sender   sms.Sender                    // Attempts, Timeout, Backoff
	wrap     func(store.Store) store.Store // the store the login flows see (gwapi keeps the real one)
	// accounting: stats.Metrics on the env's registry, with this price per SMS (0: none).
	smsCost float64
}

// openStore opens a real store and returns it with a function that dumps everything it holds: for bbolt the
// whole database file, for Redis every key and value (read by type) and its append-only files.
func openStore(t testing.TB, kind string) (store.Store, func() string) {
	t.Helper()
	switch kind {
	case "redis":
		rs := redistest.Start(t)
		st, err := redisstore.Open(context.Background(), rs.URL(), redisstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st, func() string { return dumpRedis(t, rs) }
	default:
		path := filepath.Join(t.TempDir(), "controller.db")
		st, err := boltstore.Open(path, boltstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st, func() string {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			return string(data)
		}
	}
}

func dumpRedis(t testing.TB, rs *redistest.Server) string {
	t.Helper()
	ctx := context.Background()
	opt, err := redis.ParseURL(rs.URL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	var b strings.Builder
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		typ, err := rdb.Type(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		var v any
		switch typ {
		case "string":
			v, err = rdb.Get(ctx, k).Result()
		case "hash":
			v, err = rdb.HGetAll(ctx, k).Result()
		case "set":
			v, err = rdb.SMembers(ctx, k).Result()
		case "zset":
			v, err = rdb.ZRangeWithScores(ctx, k, 0, -1).Result()
		case "list":
			v, err = rdb.LRange(ctx, k, 0, -1).Result()
		case "stream":
			v, err = rdb.XRange(ctx, k, "-", "+").Result()
		default:
			t.Fatalf("key %s of type %s not dumped", k, typ)
		}
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s %v\n", typ, k, v)
	}
	if len(keys) == 0 {
		t.Fatal("redis holds no keys: nothing was tested")
	}
	filepath.WalkDir(rs.Dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			data, _ := os.ReadFile(p)
			b.Write(data)
		}
		return nil
	})
	return b.String()
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	data, err := os.ReadFile("testdata/sites.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := sites.Parse("testdata/sites.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(nil)
	st, dump := openStore(t, o.store)
	e := &env{t: t, st: st, dump: dump, clock: &clock{}, log: &syncBuffer{}, reg: prometheus.NewRegistry(), ctlPub: pub,
		gw: map[string]*apiclient.Client{}, gwID: map[string]string{}}
	e.pepper, _ = pepper.New([]byte("0123456789abcdef0123456789abcdef-test-pepper"))
	logger := slogJSON(e.log)

	e.provider = newFakeProvider(t, o.provider)
	e.provider.log = e.log
	pcfg := e.provider.config
	pcfg.Log = logger
	p, err := sms.NewProvider(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	sender := o.sender
	sender.Provider, sender.Log = p, logger
	if sender.Timeout == 0 {
		sender.Timeout = 2 * time.Second
	}
	if sender.Backoff == nil {
		sender.Backoff = []time.Duration{20 * time.Millisecond, 50 * time.Millisecond}
	}
	lim := o.limits
	if lim == (sms.Limits{}) {
		lim = sms.Limits{Window: time.Hour} // no limits unless a test sets them
	}
	lst := e.st
	if o.wrap != nil {
		lst = o.wrap(e.st)
	}
	var acct sms.Accounting
	if o.smsCost > 0 {
		m, err := stats.NewMetrics(e.reg)
		if err != nil {
			t.Fatal(err)
		}
		acct = m
	}
	svc, err := sms.New(sms.Config{Store: lst, Pepper: e.pepper, Sender: &sender, Limits: lim, Location: cfg.Town.Timezone,
		Log: logger, Registerer: e.reg, Now: e.clock.Now, Accounting: acct, Cost: o.smsCost})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := login.New(login.Config{Sites: func() *sites.Config { return cfg }, Store: lst, Pepper: e.pepper, SigningKey: priv,
		SMS: svc, Log: logger, Registerer: e.reg, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ks := keys{}
	gwKeys := map[string]ed25519.PrivateKey{}
	e.gwKeys = gwKeys
	for _, s := range cfg.Sites {
		for _, g := range s.Gateways {
			gp, gk, _ := ed25519.GenerateKey(nil)
			ks[g.ID] = gwapi.GatewayKey{PublicKey: gp, Site: s.ID}
			gwKeys[g.ID] = gk
			e.gwID[s.ID] = g.ID
		}
	}
	gs, err := gwapi.New(gwapi.Config{Keys: ks, Nonces: nonces{e.st}, Policies: nothing{}, Sink: nothing{}, Commands: nothing{},
		SigningKey: priv, Log: logger})
	if err != nil {
		t.Fatal(err)
	}
	ls.Register(gs)
	srv := httptest.NewServer(gs.Handler())
	t.Cleanup(srv.Close)
	e.url = srv.URL
	for site, id := range e.gwID {
		c, err := apiclient.New(apiclient.Config{BaseURL: srv.URL, Site: site, GatewayID: id, Key: gwKeys[id], ControllerKey: pub})
		if err != nil {
			t.Fatal(err)
		}
		e.gw[site] = c
	}
	return e
}

// loginErr returns err's login code ("" if err is nil, "other: ..." if it is not a *LoginError).
func loginErr(err error) string {
	if err == nil {
		return ""
	}
	var le *apiclient.LoginError
	if errors.As(err, &le) {
		return le.Code
	}
	return "other: " + err.Error()
}

// smsLogin runs start and verify with the code the provider received, and checks the grant.
func (e *env) smsLogin(site, mac, ip, phone string) (apiclient.Grant, error) {
	e.t.Helper()
	ctx := context.Background()
	st, err := e.gw[site].StartSMS(ctx, apiclient.SMSStartRequest{ClientMAC: mac, ClientIP: ip, Phone: phone, Lang: "it", Consent: true})
	if err != nil {
		return apiclient.Grant{}, err
	}
	code := e.provider.code(e.t, st.RequestID)
	g, err := e.gw[site].VerifySMS(ctx, apiclient.SMSVerifyRequest{RequestID: st.RequestID, ClientMAC: mac, ClientIP: ip, Code: code})
	if err != nil {
		return apiclient.Grant{}, err
	}
	if err := apiclient.VerifyGrant(g, e.ctlPub, site, e.gwID[site], mac, ip, e.clock.Now()); err != nil {
		e.t.Fatalf("grant from the controller does not verify: %v", err)
	}
	return g, nil
}

var codeRE = regexp.MustCompile(`\b\d{6}\b`)

// fakeProvider is an SMS provider's API on loopback (or the log, for the log provider). It records what it was
// asked to send and can fail on purpose.
type fakeProvider struct {
	kind   string
	config sms.ProviderConfig
	log    *syncBuffer // log provider: the controller's log

	mu       sync.Mutex
	sent     []sentSMS
	requests int           // every HTTP request to the send endpoint
	fail     int           // answer 500 to this many send requests
	reject   bool          // twilio: refuse the number with a 400 that quotes it, as Twilio does
	delay    time.Duration // hold each send request this long
	logins   int           // skebby logins
}

type sentSMS struct{ To, Text string }

func newFakeProvider(t testing.TB, kind string) *fakeProvider {
	t.Helper()
	if kind == "" {
		kind = "twilio"
	}
	f := &fakeProvider{kind: kind}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	hold := func(r *http.Request) bool { // false: answered 500
		f.mu.Lock()
		f.requests++
		d, fail := f.delay, f.fail > 0
		if fail {
			f.fail--
		}
		f.mu.Unlock()
		if d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
			}
		}
		return !fail
	}
	record := func(to, text string) {
		f.mu.Lock()
		f.sent = append(f.sent, sentSMS{To: to, Text: text})
		f.mu.Unlock()
	}
	switch kind {
	case "twilio":
		const sid, token = "AC0123456789abcdef0123456789abcdef", "twilio-secret-token"
		f.config = sms.ProviderConfig{Kind: "twilio", URL: srv.URL, Account: sid, From: "+15005550006", Secret: token}
		mux.HandleFunc("POST /2010-04-01/Accounts/{sid}/Messages.json", func(w http.ResponseWriter, r *http.Request) {
			u, p, ok := r.BasicAuth()
			if !ok || u != sid || p != token || r.PathValue("sid") != sid {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(401)
				io.WriteString(w, `{"code":20003,"message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401}`)
				return
			}
			if !hold(r) {
				w.WriteHeader(500)
				io.WriteString(w, `{"code":20500,"message":"Internal Server Error","status":500}`)
				return
			}
			f.mu.Lock()
			reject := f.reject
			f.mu.Unlock()
			if reject || r.PostFormValue("From") != "+15005550006" || r.PostFormValue("To") == "" {
				w.WriteHeader(400)
				io.WriteString(w, `{"code":21211,"message":"The 'To' number `+r.PostFormValue("To")+` is not a valid phone number.","status":400}`)
				return
			}
			record(r.PostFormValue("To"), r.PostFormValue("Body"))
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(201)
			json.NewEncoder(w).Encode(map[string]any{"sid": "SM" + strings.Repeat("a", 32), "status": "queued", "to": r.PostFormValue("To"),
				"body": r.PostFormValue("Body"), "error_code": nil, "error_message": nil, "api_version": "2010-04-01"})
		})
	case "skebby":
		const user, pass = "comune.prova", "skebby-password"
		f.config = sms.ProviderConfig{Kind: "skebby", URL: srv.URL + "/API/v1.0/REST", Account: user, Secret: pass, From: "ComuneWiFi"}
		mux.HandleFunc("GET /API/v1.0/REST/login", func(w http.ResponseWriter, r *http.Request) {
			u, p, ok := r.BasicAuth()
			if !ok || u != user || p != pass {
				w.WriteHeader(401)
				return
			}
			f.mu.Lock()
			f.logins++
			n := f.logins
			f.mu.Unlock()
			fmt.Fprintf(w, "USERKEY1;SESSION%d", n)
		})
		mux.HandleFunc("POST /API/v1.0/REST/sms", func(w http.ResponseWriter, r *http.Request) {
			f.mu.Lock()
			session := fmt.Sprintf("SESSION%d", f.logins)
			f.mu.Unlock()
			if r.Header.Get("user_key") != "USERKEY1" || r.Header.Get("Session_key") != session {
				w.WriteHeader(401)
				return
			}
			if !hold(r) {
				w.WriteHeader(500)
				return
			}
			var body struct {
				MessageType string   `json:"message_type"`
				Message     string   `json:"message"`
				Recipient   []string `json:"recipient"`
				Sender      string   `json:"sender"`
			}
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.MessageType != "GP" || len(body.Recipient) != 1 || body.Sender != "ComuneWiFi" {
				w.WriteHeader(400)
				return
			}
			record(body.Recipient[0], body.Message)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(201)
			io.WriteString(w, `{"result":"OK","order_id":"123456789","total_sent":1,"remaining_credits":99}`)
		})
	case "webhook":
		f.config = sms.ProviderConfig{Kind: "webhook", URL: srv.URL + "/send", Secret: "hook-token"}
		mux.HandleFunc("POST /send", func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer hook-token" {
				w.WriteHeader(401)
				return
			}
			if !hold(r) {
				w.WriteHeader(500)
				return
			}
			var body struct{ To, Text string }
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
				w.WriteHeader(400)
				return
			}
			record(body.To, body.Text)
			w.WriteHeader(204)
		})
	case "log":
		f.config = sms.ProviderConfig{Kind: "log"}
	default:
		t.Fatalf("no fake for provider %q", kind)
	}
	return f
}

// code returns the code the provider received for request id: the log provider logs the id with it; the others
// get only the text, so the last message sent is the one.
func (f *fakeProvider) code(t testing.TB, id string) string {
	t.Helper()
	if f.kind == "log" {
		for _, line := range strings.Split(f.log.String(), "\n") {
			if strings.Contains(line, id) && strings.Contains(line, "log provider") {
				var l struct{ Code string }
				json.Unmarshal([]byte(line), &l)
				return l.Code
			}
		}
		t.Fatalf("no code for %s in the log", id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.sent) == 0 {
		t.Fatal("the provider received no SMS")
	}
	c := codeRE.FindString(f.sent[len(f.sent)-1].Text)
	if c == "" {
		t.Fatalf("no code in %q", f.sent[len(f.sent)-1].Text)
	}
	return c
}

func (f *fakeProvider) count() (sent, requests int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sent), f.requests
}

func slogJSON(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
