package main

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/portal/internal/memlimit"
)

// The running daemon lifts its soft memory limit when the portal gets
// busy and lowers it again once the burst is over (memlimit.Governor):
// go_gc_gomemlimit_bytes on its metrics listener is 24 MiB at start, 96 MiB
// after a burst of page requests from the phones, and 24 MiB again after
// the hold.
func TestMemoryLimitFollowsPortalBurst(t *testing.T) {
	s := newSite(t, 4)
	limit := func() (int64, string) {
		r := fetch(s.l.Gateway, 2*time.Second, "http://127.0.0.1:9102/metrics")
		m := regexp.MustCompile(`(?m)^go_gc_gomemlimit_bytes (\S+)$`).FindStringSubmatch(r.Body)
		if r.Code != 200 || m == nil {
			return -1, r.String()
		}
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			return -1, m[0]
		}
		return int64(v), m[0]
	}
	if v, msg := limit(); v != memlimit.DefaultIdle {
		t.Fatalf("at start: limit %d (%s), want %d", v, msg, int64(memlimit.DefaultIdle))
	}

	// Each phone asks for the portal page 25 times a second for 2 s
	// (within the per-client rate limit of 20/s with bursts of 40), four
	// phones: ~100 requests served a second, past the 50 that lift it.
	var wg sync.WaitGroup
	served := make([]int, len(s.l.Clients))
	for i, c := range s.l.Clients {
		hc := c.HTTPClient(nil)
		hc.Timeout = 2 * time.Second
		wg.Go(func() {
			tick := time.NewTicker(40 * time.Millisecond)
			defer tick.Stop()
			for range 50 {
				<-tick.C
				resp, err := hc.Get("http://10.20.0.1:2050/portal/")
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					served[i]++
				}
			}
		})
	}
	wg.Wait()
	total := 0
	for _, n := range served {
		total += n
	}
	if total < 150 {
		t.Fatalf("the portal served %d of %d page requests (%v): not a burst", total, 50*len(served), served)
	}
	eventually(t, 5*time.Second, "the limit lifted after the burst", func() (bool, string) {
		v, msg := limit()
		return v == memlimit.DefaultBusy, fmt.Sprintf("%s (served %d)", msg, total)
	})
	// Quiet again: lowered after the hold (30 s after the last busy second).
	t0 := time.Now()
	eventually(t, memlimit.DefaultHold+15*time.Second, "the limit lowered after the hold", func() (bool, string) {
		v, msg := limit()
		return v == memlimit.DefaultIdle, msg
	})
	if d := time.Since(t0); d < memlimit.DefaultHold-5*time.Second {
		t.Errorf("the limit was lowered %v after the burst, before the %v hold", d.Round(time.Second), memlimit.DefaultHold)
	}
}
