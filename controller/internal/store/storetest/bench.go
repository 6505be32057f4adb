package storetest

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/store"
)

// Bench runs the store benchmarks the controller's load depends on:
// gateway heartbeats and session-event ingest, one caller and parallel
// callers (16 on this 2-core machine, as many gateways' requests at once). The target elsewhere is
// 10,000 gateways checking in every 30 s (333 heartbeats/s) plus their
// session events.
func Bench(b *testing.B, newStore func(b *testing.B) store.Store) {
	const gateways = 10000
	ids := make([]string, gateways)
	for i := range ids {
		ids[i] = fmt.Sprintf("gw-%05d", i)
	}
	h := store.GatewayHealth{Version: "1.4.2", Uptime: 36 * time.Hour, ClientsOnline: 23, ReconcileRepairs: 1, Extra: map[string]string{"load": "0.12"}}
	b.Run("Heartbeat", func(b *testing.B) {
		s := newStore(b)
		b.ReportAllocs()
		defer cpuPerOp(b)()
		i := 0
		for b.Loop() {
			if err := s.Heartbeat(ctx, ids[i%gateways], time.Now(), h); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("HeartbeatParallel", func(b *testing.B) {
		s := newStore(b)
		b.ReportAllocs()
		defer cpuPerOp(b)()
		var n atomic.Int64
		b.SetParallelism(8) // 8 callers per CPU: many gateways at once
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1)
				if err := s.Heartbeat(ctx, ids[i%gateways], time.Now(), h); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	// Each session is a start and 9 interims, every event with a new id.
	event := func(i int64) store.SessionEvent {
		kind := store.EventInterim
		if i%10 == 0 {
			kind = store.EventStart
		}
		sid := i / 10
		return store.SessionEvent{
			ID: fmt.Sprintf("ev-%d", i), Kind: kind, SessionID: fmt.Sprintf("s-%d", sid),
			GatewayID: ids[sid%gateways], SiteID: fmt.Sprintf("site-%d", sid%20), ClientMAC: "02:00:00:00:00:01",
			UserID: fmt.Sprintf("u-%d", sid%5000), Method: "sms", Start: t0, At: t0.Add(time.Duration(i%10) * time.Minute),
			BytesDown: uint64(i%10) * 1e6, BytesUp: uint64(i%10) * 1e5,
		}
	}
	b.Run("RecordEvent", func(b *testing.B) {
		s := newStore(b)
		b.ReportAllocs()
		defer cpuPerOp(b)()
		var i int64
		for b.Loop() {
			if _, err := s.RecordEvent(ctx, event(i)); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("Rollups", func(b *testing.B) { benchRollups(b, newStore(b)) })
	b.Run("RecordEventParallel", func(b *testing.B) {
		s := newStore(b)
		b.ReportAllocs()
		defer cpuPerOp(b)()
		var n atomic.Int64
		b.SetParallelism(8) // 8 callers per CPU: many gateways at once
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.RecordEvent(ctx, event(n.Add(1)-1)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// benchRollups seeds a year of daily counters for one site and measures a
// year of Daily and a month of Hourly (the dashboard's reads).
func benchRollups(b *testing.B, s store.Store) {
	year := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	for d := range 365 {
		c := map[string]int64{"sms_sent": 3, store.CounterSessions: 40, store.MethodCounter("sms"): 25}
		if err := s.IncrHourly(ctx, "park", year.AddDate(0, 0, d), c); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("DailyYear", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r, err := s.Daily(ctx, "park", year.AddDate(0, 0, -1), year.AddDate(1, 0, 0))
			if err != nil || len(r) != 365 {
				b.Fatalf("Daily = %d days, %v; want 365", len(r), err)
			}
		}
	})
	b.Run("HourlyMonth", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r, err := s.Hourly(ctx, "park", year, year.AddDate(0, 1, 0))
			if err != nil || len(r) != 31 {
				b.Fatalf("Hourly = %d hours, %v; want 31", len(r), err)
			}
		}
	})
}

// cpuPerOp reports this process's CPU time (user+system, all threads) per
// operation as "cpu-ns/op": the controller's share of the work, without
// redis-server's, which runs in its own process. Call as defer
// cpuPerOp(b)() before the loop.
func cpuPerOp(b *testing.B) func() {
	before := cpuTime()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64((cpuTime()-before).Nanoseconds())/float64(b.N), "cpu-ns/op")
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
