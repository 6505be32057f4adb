package apiclient

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func testGrant(t *testing.T) (Grant, ed25519.PrivateKey) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 25, 20, 0, 0, 123456789, time.UTC)
	g := Grant{
		ID: "g1", Site: "parco", GatewayID: "gw1", ClientMAC: "02:00:00:00:00:01", ClientIP: "10.1.0.5",
		User: "u123", Method: MethodSMS, DownBPS: 5e6, UpBPS: 1e6, Session: Duration(time.Hour),
		Idle: Duration(10 * time.Minute), QuotaBytes: 1 << 30, IssuedAt: now, ExpiresAt: now.Add(GrantTTL),
	}
	if err := SignGrant(&g, key); err != nil {
		t.Fatal(err)
	}
	return g, key
}

func TestVerifyGrant(t *testing.T) {
	g, key := testGrant(t)
	pub := key.Public().(ed25519.PublicKey)
	now := g.IssuedAt.Add(time.Second)
	if err := VerifyGrant(g, pub, "parco", "gw1", "02-00-00-00-00-01", "10.1.0.5", now); err != nil {
		t.Fatalf("valid grant refused: %v", err)
	}
	// Every field changed, one at a time, breaks the signature.
	v := reflect.ValueOf(&g).Elem()
	for i := 0; i < v.NumField(); i++ {
		name := v.Type().Field(i).Name
		if name == "Signature" || !v.Type().Field(i).IsExported() {
			continue
		}
		t.Run(name, func(t *testing.T) {
			m := g
			f := reflect.ValueOf(&m).Elem().Field(i)
			switch f.Kind() {
			case reflect.String:
				f.SetString(f.String() + "x")
			case reflect.Uint64:
				f.SetUint(f.Uint() + 1)
			case reflect.Int64:
				f.SetInt(f.Int() + 1)
			case reflect.Struct: // time.Time
				f.Set(reflect.ValueOf(f.Interface().(time.Time).Add(-time.Nanosecond)))
			default:
				t.Fatalf("field %s of kind %s not covered", name, f.Kind())
			}
			err := VerifyGrant(m, pub, m.Site, m.GatewayID, m.ClientMAC, m.ClientIP, now)
			if !errors.Is(err, ErrGrant) {
				t.Fatalf("grant with %s changed accepted: %v", name, err)
			}
		})
	}
	for _, tc := range []struct {
		name              string
		site, gw, mac, ip string
		now               time.Time
	}{
		{"other site", "other", "gw1", g.ClientMAC, g.ClientIP, now},
		{"other gateway", "parco", "gw2", g.ClientMAC, g.ClientIP, now},
		{"other MAC", "parco", "gw1", "02:00:00:00:00:02", g.ClientIP, now},
		{"other IP", "parco", "gw1", g.ClientMAC, "10.1.0.6", now},
		{"expired", "parco", "gw1", g.ClientMAC, g.ClientIP, g.ExpiresAt},
		{"from the future", "parco", "gw1", g.ClientMAC, g.ClientIP, g.IssuedAt.Add(-Skew - time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := VerifyGrant(g, pub, tc.site, tc.gw, tc.mac, tc.ip, tc.now); !errors.Is(err, ErrGrant) {
				t.Fatalf("accepted: %v", err)
			}
		})
	}
	_, other, _ := ed25519.GenerateKey(nil)
	if err := VerifyGrant(g, other.Public().(ed25519.PublicKey), "parco", "gw1", g.ClientMAC, g.ClientIP, now); !errors.Is(err, ErrGrant) {
		t.Fatalf("grant verified with another key: %v", err)
	}
	bad := g
	bad.User = "u\nsite:x"
	if err := SignGrant(&bad, key); !errors.Is(err, ErrMalformed) {
		t.Fatalf("signing a field with a newline: %v", err)
	}
}

// TestLoginAnswers checks how the client reads login answers: a signed refusal becomes *LoginError, an unsigned or
// forged one does not, and a grant must be signed.
func TestLoginAnswers(t *testing.T) {
	_, ctlKey, _ := ed25519.GenerateKey(nil)
	_, forger, _ := ed25519.GenerateKey(nil)
	_, gwKey, _ := ed25519.GenerateKey(nil)
	var status int
	var body string
	var signWith ed25519.PrivateKey
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/sites/parco/login/sms/verify" || r.Header.Get(HeaderSignature) == "" {
			t.Errorf("request %s unsigned or to the wrong path", r.URL.Path)
		}
		if signWith != nil {
			msg, _ := SignedResponse{Gateway: "gw1", Nonce: r.Header.Get(HeaderNonce), Status: status, BodySHA256: sha256.Sum256([]byte(body))}.AppendMessage(nil)
			w.Header().Set(HeaderSignature, EncodeSignature(ed25519.Sign(signWith, msg)))
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	defer srv.Close()
	c, err := New(Config{BaseURL: srv.URL, Site: "parco", GatewayID: "gw1", Key: gwKey, ControllerKey: ctlKey.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	g, _ := testGrant(t)
	gj, _ := json.Marshal(g)
	for _, tc := range []struct {
		name   string
		status int
		body   string
		key    ed25519.PrivateKey
		want   string
	}{
		{"grant", 200, string(gj), ctlKey, "grant g1"},
		{"unsigned grant", 200, string(gj), nil, ErrBadSignature.Error()},
		{"forged grant", 200, string(gj), forger, ErrBadSignature.Error()},
		{"refusal", 422, `{"code":"wrong_code","message":"wrong code","tries_left":3}`, ctlKey, "LoginError wrong_code 3 422"},
		{"rate limited", 429, `{"code":"rate_limited","retry_after_s":60}`, ctlKey, "LoginError rate_limited 0 429"},
		{"provider failed", 503, `{"code":"provider_failed"}`, ctlKey, "LoginError provider_failed 0 503"},
		{"forged refusal", 422, `{"code":"wrong_code"}`, forger, "controller answered 422"},
		{"bare 401", 401, "Unauthorized\n", nil, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, signWith = tc.status, tc.body, tc.key
			got, err := c.VerifySMS(context.Background(), SMSVerifyRequest{RequestID: "r", ClientMAC: "02:00:00:00:00:01", ClientIP: "10.1.0.5", Code: "123456"})
			var s string
			var le *LoginError
			switch {
			case err == nil:
				s = "grant " + got.ID
			case errors.As(err, &le):
				s = fmt.Sprintf("LoginError %s %d %d", le.Code, le.TriesLeft, le.Status)
			case errors.Is(err, ErrRefused):
				s = "refused"
			default:
				s = err.Error()
			}
			if !strings.Contains(s, tc.want) {
				t.Errorf("got %q, want %q", s, tc.want)
			}
		})
	}
}

// TestGrantInSignedAnswer: a grant that came in an answer the controller's
// key signed is not checked a second time (the answer's signature covers
// it); any other grant is, and the checks of its fields stay.
func TestGrantInSignedAnswer(t *testing.T) {
	_, ctlKey, _ := ed25519.GenerateKey(nil)
	_, gwKey, _ := ed25519.GenerateKey(nil)
	g, otherKey := testGrant(t) // signed by a key that is not the controller's
	body, _ := json.Marshal(g)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		msg, _ := SignedResponse{Gateway: "gw1", Nonce: r.Header.Get(HeaderNonce), Status: 200, BodySHA256: sha256.Sum256(body)}.AppendMessage(nil)
		w.Header().Set(HeaderSignature, EncodeSignature(ed25519.Sign(ctlKey, msg)))
		w.Write(body)
	}))
	defer srv.Close()
	ctlPub := ctlKey.Public().(ed25519.PublicKey)
	c, err := New(Config{BaseURL: srv.URL, Site: "parco", GatewayID: "gw1", Key: gwKey, ControllerKey: ctlPub})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.VerifySMS(context.Background(), SMSVerifyRequest{RequestID: "r", ClientMAC: g.ClientMAC, ClientIP: g.ClientIP, Code: "123456"})
	if err != nil {
		t.Fatal(err)
	}
	now := g.IssuedAt.Add(time.Second)
	if err := VerifyGrant(got, ctlPub, "parco", "gw1", g.ClientMAC, g.ClientIP, now); err != nil {
		t.Fatalf("grant in a signed answer refused: %v", err)
	}
	if err := VerifyGrant(got, ctlPub, "parco", "gw1", "02:00:00:00:00:02", g.ClientIP, now); !errors.Is(err, ErrGrant) {
		t.Fatalf("grant in a signed answer accepted for another MAC: %v", err)
	}
	if err := VerifyGrant(got, ctlPub, "parco", "gw1", g.ClientMAC, g.ClientIP, g.ExpiresAt); !errors.Is(err, ErrGrant) {
		t.Fatalf("expired grant in a signed answer accepted: %v", err)
	}
	// A copy with a field changed after decoding, or another grant
	// decoded into the marked value, is checked in full.
	changed := got
	changed.QuotaBytes++
	if err := VerifyGrant(changed, ctlPub, "parco", "gw1", g.ClientMAC, g.ClientIP, now); !errors.Is(err, ErrGrant) {
		t.Fatalf("grant changed after its answer was verified accepted: %v", err)
	}
	over := got
	other := g
	other.ID = "g2"
	ob, _ := json.Marshal(other)
	if err := json.Unmarshal(ob, &over); err != nil {
		t.Fatal(err)
	}
	if err := VerifyGrant(over, ctlPub, "parco", "gw1", g.ClientMAC, g.ClientIP, now); !errors.Is(err, ErrGrant) {
		t.Fatalf("another grant decoded into a verified one accepted: %v", err)
	}
	// The same grant from anywhere else (decoded again: no answer) must
	// carry the controller's signature; under another key it is checked.
	var relayed Grant
	b, _ := json.Marshal(got)
	if err := json.Unmarshal(b, &relayed); err != nil {
		t.Fatal(err)
	}
	if err := VerifyGrant(relayed, ctlPub, "parco", "gw1", g.ClientMAC, g.ClientIP, now); !errors.Is(err, ErrGrant) {
		t.Fatalf("grant signed by another key accepted outside an answer: %v", err)
	}
	_, third, _ := ed25519.GenerateKey(nil)
	if err := VerifyGrant(got, third.Public().(ed25519.PublicKey), "parco", "gw1", g.ClientMAC, g.ClientIP, now); !errors.Is(err, ErrGrant) {
		t.Fatalf("grant accepted under a key that neither signed it nor its answer: %v", err)
	}
	if err := VerifyGrant(got, otherKey.Public().(ed25519.PublicKey), "parco", "gw1", g.ClientMAC, g.ClientIP, now); err != nil {
		t.Fatalf("grant refused under the key that signed it: %v", err)
	}
}

// A burst of logins larger than the default transport's idle pool (100)
// reuses its connections at the next burst instead of dialling again.
func TestBurstsReuseConnections(t *testing.T) {
	const n = 150
	var mu sync.Mutex
	dials := 0
	inFlight, all := 0, make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		if inFlight == n {
			close(all)
		}
		mu.Unlock()
		select { // every request of a burst holds its connection until all arrived
		case <-all:
		case <-time.After(5 * time.Second):
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			dials++
			mu.Unlock()
		}
	}
	srv.Start()
	defer srv.Close()
	_, gwKey, _ := ed25519.GenerateKey(nil)
	ctlPub, _, _ := ed25519.GenerateKey(nil)
	c, err := New(Config{BaseURL: srv.URL, Site: "parco", GatewayID: "gw1", Key: gwKey, ControllerKey: ctlPub})
	if err != nil {
		t.Fatal(err)
	}
	burst := func() int {
		mu.Lock()
		inFlight, all = 0, make(chan struct{})
		mu.Unlock()
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				resp, err := c.hc.Get(srv.URL + "/")
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			})
		}
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return dials
	}
	if d := burst(); d != n {
		t.Fatalf("first burst of %d opened %d connections, want %d", n, d, n)
	}
	if d := burst(); d != n {
		t.Errorf("second burst dialled %d more connections, want none (all %d kept idle)", d-n, n)
	}
}
