package apiclient

import (
	"crypto/ed25519"
	"errors"
	"reflect"
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
		if name == "Signature" {
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
