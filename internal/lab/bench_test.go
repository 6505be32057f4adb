package lab

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkNewClose measures building and removing a lab, per client count.
func BenchmarkNewClose(b *testing.B) {
	Require(b, "ip", "bridge")
	for _, n := range []int{2, 20} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			for b.Loop() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				l, err := New(ctx, Options{Clients: n})
				if err != nil {
					cancel()
					b.Fatal(err)
				}
				if err := l.Close(); err != nil {
					b.Error(err)
				}
				cancel()
			}
		})
	}
}

// BenchmarkStartUpstream measures starting the upstream services.
func BenchmarkStartUpstream(b *testing.B) {
	Require(b, "ip", "bridge", "dnsmasq", "iperf3", "ss")
	b.StopTimer()
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		l, err := New(ctx, Options{Clients: 1})
		if err != nil {
			cancel()
			b.Fatal(err)
		}
		b.StartTimer()
		err = l.StartUpstream(ctx)
		b.StopTimer()
		l.Close()
		cancel()
		if err != nil {
			b.Fatal(err)
		}
	}
}
