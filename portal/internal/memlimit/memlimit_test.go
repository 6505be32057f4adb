package memlimit

import (
	"context"
	"slices"
	"testing"
	"time"
)

func newGov(set *[]int64) *Governor {
	return &Governor{Idle: 24, Busy: 96, Rate: 50, Hold: 30 * time.Second,
		Set: func(v int64) int64 { *set = append(*set, v); return 0 }}
}

func TestGovernor(t *testing.T) {
	var set []int64
	g := newGov(&set)
	t0 := time.Unix(1_700_000_000, 0)
	g.Step(t0) // the first step sets the idle limit
	steps := []struct {
		at   time.Duration
		reqs int
		busy bool
	}{
		{1 * time.Second, 10, false},  // quiet
		{2 * time.Second, 49, false},  // just under the rate
		{3 * time.Second, 50, true},   // at the rate: lifted
		{4 * time.Second, 0, true},    // held
		{32 * time.Second, 0, true},   // held until 30 s after the last busy second (3 s)
		{33 * time.Second, 200, true}, // busy again just then: no second Set
		{62 * time.Second, 0, true},
		{63 * time.Second, 0, false}, // 30 s after 33 s: lowered
		{64 * time.Second, 10, false},
		// A late step (3 s) with 120 requests is 40 a second: not busy.
		{67 * time.Second, 120, false},
		// A step 10 ms after the last measures nothing: its request
		// waits for the next step.
		{67*time.Second + 10*time.Millisecond, 1, false},
		// 48 more: 49 in 0.99 s is 49.5 a second, rounded up to 50.
		{67*time.Second + 990*time.Millisecond, 48, true},
	}
	for _, s := range steps {
		for range s.reqs {
			g.Note()
		}
		g.Step(t0.Add(s.at))
		if g.Lifted() != s.busy {
			t.Fatalf("at %v with %d requests: lifted %v, want %v", s.at, s.reqs, g.Lifted(), s.busy)
		}
	}
	if want := []int64{24, 96, 24, 96}; !slices.Equal(set, want) {
		t.Fatalf("limits set %v, want %v (only on changes)", set, want)
	}
}

func TestRunLeavesIdleLimit(t *testing.T) {
	var set []int64
	g := newGov(&set)
	g.Step(time.Now())
	for range 100 {
		g.Note()
	}
	g.Step(time.Now().Add(time.Second))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if set[len(set)-1] != 24 {
		t.Fatalf("limits set %v: Run must leave the idle limit", set)
	}
}
