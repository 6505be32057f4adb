package apiclient

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestBackoffBounds(t *testing.T) {
	b := Backoff{Base: time.Second, Max: time.Minute}
	wantCeil := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for attempt, c := range wantCeil {
		c *= time.Second
		if got := b.Ceiling(attempt); got != c {
			t.Errorf("Ceiling(%d) = %v, want %v", attempt, got, c)
		}
		lo, hi := c, time.Duration(0)
		for range 5000 {
			d := b.Delay(attempt)
			if d < c/2 || d > c {
				t.Fatalf("Delay(%d) = %v, outside [%v, %v]", attempt, d, c/2, c)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		// Jitter really spreads: 5000 draws cover nearly the whole [c/2, c] range.
		if lo > c/2+c/50 || hi < c-c/50 {
			t.Errorf("Delay(%d) drew only [%v, %v] of [%v, %v]", attempt, lo, hi, c/2, c)
		}
	}
	if got := b.Ceiling(1000); got != time.Minute {
		t.Errorf("Ceiling(1000) = %v, want the Max (no overflow)", got)
	}
}

// TestSpreadFleet: 10,000 gateways booting together spread their first contact over the window: no second of
// a 10 s spread gets more than 12% of them (a uniform draw gives 10%).
func TestSpreadFleet(t *testing.T) {
	const n, window = 10000, 10 * time.Second
	var perSecond [10]int
	for range n {
		d := Spread(window)
		if d < 0 || d >= window {
			t.Fatalf("Spread = %v, outside [0, %v)", d, window)
		}
		perSecond[d/time.Second]++
	}
	for s, k := range perSecond {
		if k > n*12/100 || k < n*8/100 {
			t.Errorf("second %d got %d of %d first contacts, want about %d", s, k, n, n/10)
		}
	}
	if Spread(0) != 0 || Spread(-1) != 0 {
		t.Error("Spread of a non-positive window must be 0")
	}
}

// TestSignedMessages pins the exact bytes signed (README.md documents them): changing them breaks every
// deployed gateway, so it must be a deliberate, versioned change.
func TestSignedMessages(t *testing.T) {
	req, err := SignedRequest{Gateway: "gw-pertini-1", Method: "POST", Target: "/v1/sites/parco-pertini/events?x=1",
		Timestamp: 1764064800, Nonce: "AAAAAAAAAAAAAAAAAAAAAA", BodySHA256: sha256.Sum256([]byte("{}"))}.AppendMessage(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "civicwifi-request-v1\ngateway:gw-pertini-1\nmethod:POST\ntarget:/v1/sites/parco-pertini/events?x=1\n" +
		"timestamp:1764064800\nnonce:AAAAAAAAAAAAAAAAAAAAAA\n" +
		"body-sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\n"
	if diff := cmp.Diff(want, string(req)); diff != "" {
		t.Errorf("request message (-want +got):\n%s", diff)
	}
	resp, err := SignedResponse{Gateway: "gw-pertini-1", Nonce: "AAAAAAAAAAAAAAAAAAAAAA", Status: 304, ETag: `"v1"`,
		BodySHA256: sha256.Sum256(nil)}.AppendMessage(nil)
	if err != nil {
		t.Fatal(err)
	}
	want = "civicwifi-response-v1\ngateway:gw-pertini-1\nnonce:AAAAAAAAAAAAAAAAAAAAAA\nstatus:304\netag:\"v1\"\n" +
		"body-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
	if diff := cmp.Diff(want, string(resp)); diff != "" {
		t.Errorf("response message (-want +got):\n%s", diff)
	}
	for _, bad := range []SignedRequest{
		{Gateway: "gw\nx", Method: "GET", Target: "/", Nonce: "n"},
		{Gateway: "gw", Method: "GET", Target: "/\r", Nonce: "n"},
		{Gateway: "", Method: "GET", Target: "/", Nonce: "n"},
	} {
		if _, err := bad.AppendMessage(nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("%+v: %v, want ErrMalformed", bad, err)
		}
	}
}

func TestEnroll(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	e, err := Enroll(dir, "gw-pertini-1")
	if err != nil {
		t.Fatal(err)
	}
	for path, mode := range map[string]os.FileMode{dir: 0o700, e.KeyFile: 0o600, e.PublicKeyFile: 0o644} {
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want mode %04o", path, st.Mode(), err, mode)
		}
	}
	priv, err := LoadPrivateKey(e.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := LoadPublicKey(e.PublicKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(priv.Public()) || !strings.HasPrefix(e.PublicKeyLine, "ed25519:") || len(e.PublicKeyLine) != 8+44 {
		t.Errorf("public key %q does not match the private key", e.PublicKeyLine)
	}
	if p2, err := ParsePublicKey(e.PublicKeyLine); err != nil || !p2.Equal(pub) {
		t.Errorf("ParsePublicKey(line): %v", err)
	}
	msg := []byte("hello")
	if !ed25519.Verify(pub, msg, ed25519.Sign(priv, msg)) {
		t.Error("key pair does not verify")
	}

	// A second enrollment under the same name must not replace the key.
	before, _ := os.ReadFile(e.KeyFile)
	if _, err := Enroll(dir, "gw-pertini-1"); err == nil || !errors.Is(err, os.ErrExist) {
		t.Errorf("second Enroll: %v, want it refused (file exists)", err)
	}
	if after, _ := os.ReadFile(e.KeyFile); string(after) != string(before) {
		t.Error("second Enroll changed the key file")
	}
	if _, err := Enroll(dir, "../etc/x"); err == nil {
		t.Error("Enroll accepted a name with a path in it")
	}

	// A private key readable by others is refused, like ssh does.
	os.Chmod(e.KeyFile, 0o644)
	if _, err := LoadPrivateKey(e.KeyFile); !errors.Is(err, ErrKeyFileMode) {
		t.Errorf("LoadPrivateKey(0644): %v, want ErrKeyFileMode", err)
	}
}

func TestParsePublicKeyErrors(t *testing.T) {
	for in, want := range map[string]string{
		"ssh-ed25519 AAAA":  `want ed25519:<base64>`,
		"ed25519:!!!!":      "illegal base64",
		"ed25519:AAAAAAAA":  "6 bytes, want 32",
		"":                  "want ed25519:",
		"ed25519:" + "AAAA": "3 bytes, want 32",
	} {
		if _, err := ParsePublicKey(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParsePublicKey(%q) = %v, want an error containing %q", in, err, want)
		}
	}
	f := filepath.Join(t.TempDir(), "gw.pub")
	os.WriteFile(f, []byte("# gateway of the library\n\ned25519:AAAA\n"), 0o644)
	if _, err := LoadPublicKey(f); err == nil || !strings.Contains(err.Error(), f+":3:") {
		t.Errorf("LoadPublicKey: %v, want the file and line 3", err)
	}
}

func TestEventValidate(t *testing.T) {
	ok := SessionEvent{ID: "e1", Kind: EventStop, SessionID: "s1", At: time.Unix(1, 0), ClientMAC: "02:00:00:00:00:01", Reason: "idle"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid event: %v", err)
	}
	for name, tc := range map[string]struct {
		mut  func(*SessionEvent)
		want string
	}{
		"no id":          {func(e *SessionEvent) { e.ID = "" }, `id "": want 1 to 64`},
		"bad kind":       {func(e *SessionEvent) { e.Kind = "pause" }, `kind "pause"`},
		"stop no reason": {func(e *SessionEvent) { e.Reason = "" }, "a stop event needs one"},
		"start reason":   {func(e *SessionEvent) { e.Kind = EventStart }, "only a stop event has a reason"},
		"bad mac":        {func(e *SessionEvent) { e.ClientMAC = "02:00:00:00:00" }, `client_mac "02:00:00:00:00"`},
		"64-bit mac":     {func(e *SessionEvent) { e.ClientMAC = "02:00:00:00:00:00:00:01" }, "not a MAC"},
		"no time":        {func(e *SessionEvent) { e.At = time.Time{} }, "at: missing"},
		"no session":     {func(e *SessionEvent) { e.SessionID = "" }, `session_id ""`},
		"long user":      {func(e *SessionEvent) { e.User = strings.Repeat("u", 129) }, "user: longer than 128"},
	} {
		e := ok
		tc.mut(&e)
		if err := e.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
	}
}

func FuzzParsePublicKey(f *testing.F) {
	f.Add("ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
	f.Add("ed25519:")
	f.Fuzz(func(t *testing.T, s string) {
		pub, err := ParsePublicKey(s)
		if err == nil && len(pub) != ed25519.PublicKeySize {
			t.Fatalf("accepted a %d-byte key", len(pub))
		}
	})
}
