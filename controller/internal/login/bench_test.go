package login_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/civicwifi/civicwifi/controller/apiclient"
)

// BenchmarkSMSVerify measures the SMS verify path through the controller on a real Redis over loopback: a signed
// gateway request, the code check (request read, try counted, single-use take), the grant signed, the device
// remembered, the signed answer checked by the client. Codes are requested before the timer starts.
func BenchmarkSMSVerify(b *testing.B) {
	for _, par := range []bool{false, true} {
		name := "sequential"
		if par {
			name = "parallel"
		}
		b.Run("redis/"+name, func(b *testing.B) {
			e := newEnv(b, envOpts{store: "redis", provider: "webhook"})
			ctx := context.Background()
			type pending struct{ id, code, mac, ip string }
			reqs := make([]pending, b.N)
			for i := range reqs {
				mac := fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff)
				ip := fmt.Sprintf("10.20.%d.%d", i/250%4, 2+i%250)
				st, err := e.gw["parco"].StartSMS(ctx, apiclient.SMSStartRequest{ClientMAC: mac, ClientIP: ip, Phone: mobile(i), Consent: true})
				if err != nil {
					b.Fatal(err)
				}
				reqs[i] = pending{st.RequestID, e.provider.code(b, st.RequestID), mac, ip}
			}
			var next atomic.Int64
			verify := func() {
				r := reqs[next.Add(1)-1]
				g, err := e.gw["parco"].VerifySMS(ctx, apiclient.SMSVerifyRequest{RequestID: r.id, ClientMAC: r.mac, ClientIP: r.ip, Code: r.code})
				if err != nil || g.ClientMAC != r.mac {
					b.Errorf("verify: %v", err)
				}
			}
			b.ResetTimer()
			if par {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						verify()
					}
				})
			} else {
				for range b.N {
					verify()
				}
			}
		})
	}
}
