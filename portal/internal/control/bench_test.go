package control

import (
	"testing"
)

// BenchmarkStatus is one GET /v1/status round trip over the unix socket,
// keep-alive connection, fake service.
func BenchmarkStatus(b *testing.B) {
	path := startServerBench(b, &fakeService{status: sampleStatus()})
	c := NewClient(path)
	for b.Loop() {
		if _, err := c.Status(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllow is one POST /v1/allow round trip (decode, validate, encode).
func BenchmarkAllow(b *testing.B) {
	path := startServerBench(b, &fakeService{session: sampleSession()})
	c := NewClient(path)
	req := AllowRequest{MAC: "aa:bb:cc:dd:ee:03", Duration: "2h", Quota: "500MB", Down: "10mbit", Up: "2mbit"}
	for b.Loop() {
		if _, err := c.Allow(b.Context(), req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkClients500 lists 500 clients with sessions.
func BenchmarkClients500(b *testing.B) {
	cs := make([]Client, 500)
	for i := range cs {
		cs[i] = sampleClients()[0]
	}
	path := startServerBench(b, &fakeService{clients: cs})
	c := NewClient(path)
	for b.Loop() {
		if _, err := c.Clients(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}
