// Package memlimit keeps the gateway's soft memory limit low while it is
// quiet and lifts it while it serves a burst.
//
// A low limit (24 MiB) gives garbage back to a small gateway's RAM: the
// reconcile loop's kernel reads make a few MB of short-lived garbage a
// minute, and with 10,000 sessions the daemon stays under 40 MB RSS. But a
// limit is a target the collector chases: once the heap the daemon needs
// plus its garbage no longer fit under it, the collector runs back to
// back (measured: ~55 cycles a second during 1,000 logins/s, most of the
// daemon's CPU in the runtime). A burst of logins is exactly when the CPU
// should serve residents, so the Governor raises the limit while the
// portal is busy and lowers it again once the burst has been over for a
// while; then the runtime collects and returns the memory to the system.
package memlimit

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// Defaults for the gateway.
const (
	DefaultIdle = 24 << 20 // bytes
	DefaultBusy = 96 << 20 // bytes
	// DefaultRate is how many requests in a second make the portal busy:
	// a burst of logins is hundreds (each login is a page, a code
	// request and a code submission), a quiet park a few.
	DefaultRate = 50
	// DefaultHold is how long the limit stays lifted after the last busy
	// second, so that a burst with pauses does not flap.
	DefaultHold = 30 * time.Second
)

// Governor sets the soft memory limit from the rate of requests noted.
// The zero value is not usable; set Set at least.
type Governor struct {
	Idle, Busy int64         // the limits, in bytes
	Rate       int64         // requests a second from which the portal is busy
	Hold       time.Duration // how long it stays busy after the last busy second
	// Set sets the limit (runtime/debug.SetMemoryLimit).
	Set func(int64) int64
	Log *slog.Logger

	n         atomic.Int64
	busy      atomic.Bool
	busyUntil time.Time
	last      time.Time
	started   bool
}

// Note counts one request. It is cheap and safe from any goroutine.
func (g *Governor) Note() { g.n.Add(1) }

// Lifted reports whether the lifted limit is in force.
func (g *Governor) Lifted() bool { return g.busy.Load() }

// Run steps once a second until ctx ends (the first step sets the idle
// limit, unless Step was called before); it leaves the idle limit in
// place.
func (g *Governor) Run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	if !g.started {
		g.Step(time.Now())
	}
	for {
		select {
		case <-ctx.Done():
			if g.busy.Load() {
				g.busy.Store(false)
				g.Set(g.Idle)
			}
			return nil
		case now := <-t.C:
			g.Step(now)
		}
	}
}

// minStep is the shortest interval Step measures a rate over; an earlier
// step leaves the requests counted for the next one (a handful of
// requests over a few milliseconds is no rate).
const minStep = 900 * time.Millisecond

// Step looks at the requests noted since the last step and sets the limit
// if that changes whether the portal is busy. The first step sets the
// idle limit. Only Step and Run change the state: call them from one
// goroutine.
func (g *Governor) Step(now time.Time) {
	if !g.started {
		g.n.Store(0)
		g.started, g.last = true, now
		g.Set(g.Idle)
		return
	}
	elapsed := now.Sub(g.last)
	if elapsed < minStep {
		return
	}
	g.last = now
	n := g.n.Swap(0)
	// Requests a second averaged over the step, rounded up (49 in 0.99 s
	// is 50 a second). A late step averages a burst over a longer time.
	rate := (n*int64(time.Second) + int64(elapsed) - 1) / int64(elapsed)
	switch {
	case rate >= g.Rate:
		g.busyUntil = now.Add(g.Hold)
		if !g.busy.Load() {
			g.busy.Store(true)
			g.Set(g.Busy)
			g.log().Debug("memory limit lifted: the portal is busy", "requests_per_s", rate, "limit_bytes", g.Busy)
		}
	case g.busy.Load() && !now.Before(g.busyUntil):
		g.busy.Store(false)
		g.Set(g.Idle)
		g.log().Debug("memory limit lowered: the portal is quiet again", "limit_bytes", g.Idle)
	}
}

func (g *Governor) log() *slog.Logger {
	if g.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return g.Log
}
