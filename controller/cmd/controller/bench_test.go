package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/server"
	"github.com/civicwifi/civicwifi/internal/redistest"
)

// BenchmarkHeartbeatRedis: signed heartbeats through one in-process controller on Redis, over loopback HTTP
// (client signing and answer verification included, so the controller's own share is lower).
func BenchmarkHeartbeatRedis(b *testing.B) {
	r := redistest.Start(b)
	b.Setenv(server.EnvRedisPassword, r.Password)
	l := newLab(b, "redis://"+r.Addr+"/0")
	c := startController(b, l.configPath)
	gw := l.client(b, c.base, "parco", "parco-gw1")
	ctx := context.Background()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := gw.Heartbeat(ctx, apiclient.Heartbeat{Version: "1", ClientsOnline: 3}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "heartbeats/s")
}

// BenchmarkEventsRedis: batches of 50 session events (start, interim, stop of distinct sessions).
func BenchmarkEventsRedis(b *testing.B) {
	r := redistest.Start(b)
	b.Setenv(server.EnvRedisPassword, r.Password)
	l := newLab(b, "redis://"+r.Addr+"/0")
	c := startController(b, l.configPath)
	gw := l.client(b, c.base, "parco", "parco-gw1")
	ctx := context.Background()
	var n atomic.Int64
	at := time.Now().Add(-time.Hour)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			var evs []apiclient.SessionEvent
			for range 50 / 3 {
				evs = append(evs, sessionEvents(apiclient.NewEventID(), "aa:bb:cc:00:00:01", at)...)
			}
			ack, err := gw.SendEvents(ctx, evs)
			if err != nil || len(ack.Recorded) != len(evs) {
				b.Errorf("%+v %v", ack, err)
				return
			}
			n.Add(int64(len(evs)))
		}
	})
	b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "events/s")
}
