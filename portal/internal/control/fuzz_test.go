package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var fuzzSeeds = []string{
	`{"mac":"aa:bb:cc:dd:ee:01"}`,
	`{"ip":"10.0.0.5","duration":"2h","idle":"15m","quota":"500MB","down":"10mbit","up":"2mbit","method":"ctl"}`,
	`{"mac":"AA-BB-CC-DD-EE-01","ip":"::ffff:10.0.0.5","reason":"abuse"}`,
	`{"mac":42}`, `{"bogus":1}`, `[]`, `null`, ``, `{"ip":"fe80::1%eth0"}`, `{"down":"5 Mbps","ip":"1.2.3.4"}`,
	`{"ip":"10.0.0.5"} {}`, `{"mac":"\u001b[31m"}`, "{\"reason\":\"\xff\",\"ip\":\"1.1.1.1\"}",
}

// checkDecodeError: every decoding failure is a 400 (never a 500 or a panic).
func checkDecodeError(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrBadRequest) || statusOf(err) != http.StatusBadRequest {
		t.Fatalf("decode error %v (status %d) does not map to 400", err, statusOf(err))
	}
}

func FuzzDecodeAllow(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req AllowRequest
		if err := decodeRequest(bytes.NewReader(body), &req); err != nil {
			checkDecodeError(t, err)
			return
		}
		norm, err := req.Normalized()
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || statusOf(err) != http.StatusBadRequest {
				t.Fatalf("validation error %v is not a 400 FieldError", err)
			}
			return
		}
		again, err := norm.Normalized()
		if err != nil {
			t.Fatalf("normalized request %+v is rejected: %v", norm, err)
		}
		if diff := cmp.Diff(norm, again); diff != "" {
			t.Fatalf("Normalized is not idempotent (-once +twice):\n%s", diff)
		}
		b, err := json.Marshal(norm)
		if err != nil {
			t.Fatal(err)
		}
		var back AllowRequest
		if err := decodeRequest(bytes.NewReader(b), &back); err != nil {
			t.Fatalf("re-decoding %s: %v", b, err)
		}
		if diff := cmp.Diff(norm, back); diff != "" {
			t.Fatalf("JSON round trip (-want +got):\n%s", diff)
		}
	})
}

func FuzzDecodeKick(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req KickRequest
		if err := decodeRequest(bytes.NewReader(body), &req); err != nil {
			checkDecodeError(t, err)
			return
		}
		norm, err := req.Normalized()
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || statusOf(err) != http.StatusBadRequest {
				t.Fatalf("validation error %v is not a 400 FieldError", err)
			}
			return
		}
		again, err := norm.Normalized()
		if err != nil || again != norm {
			t.Fatalf("Normalized is not idempotent: %+v -> %+v, %v", norm, again, err)
		}
		b, err := json.Marshal(norm)
		if err != nil {
			t.Fatal(err)
		}
		var back KickRequest
		if err := decodeRequest(bytes.NewReader(b), &back); err != nil || back != norm {
			t.Fatalf("JSON round trip of %s: %+v, %v", b, back, err)
		}
	})
}
