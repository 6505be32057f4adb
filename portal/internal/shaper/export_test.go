package shaper

// Hooks for the tier-2 tests (package shaper_test).

// CapturedCommands and FixtureFile name the fixtures TestKernelCapture writes.
var (
	CapturedCommands = capturedCommands
	FixtureFile      = fixtureFile
)

// UseNetlink switches the client ops between netlink (the default of New)
// and `tc -batch`, so a test can compare the two.
func (t *TC) UseNetlink(on bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.useNL = on
}
