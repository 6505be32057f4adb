package main

import (
	"context"
	"fmt"

	"github.com/civicwifi/civicwifi/controller/internal/sites"
)

func validate(_ context.Context, e *env, args []string) error {
	fs := newFlags("validate", e)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return errUsage
	}
	if len(pos) != 1 {
		return errUsage
	}
	c, err := sites.Load(pos[0])
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return errReported
	}
	gws, aps := 0, 0
	for _, s := range c.Sites {
		gws += len(s.Gateways)
		aps += len(s.AccessPoints)
	}
	fmt.Fprintf(e.stdout, "%s: ok: %d sites, %d policies, %d gateways, %d access points\n",
		pos[0], len(c.Sites), len(c.Policies), gws, aps)
	return nil
}
