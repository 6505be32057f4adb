package main

import (
	"context"
	"fmt"

	"github.com/civicwifi/civicwifi/controller/internal/sites"
)

func plan(ctx context.Context, e *env, args []string) error {
	fs := newFlags("plan", e)
	against := fs.String("against", "", "the sites.yaml to compare with (the running controller's, until plan can ask it)")
	pos, err := parseInterspersed(fs, args)
	if err != nil || len(pos) != 1 {
		return errUsage
	}
	if *against == "" {
		fmt.Fprintln(e.stderr, "controller plan: --against is required (asking the running controller is not built yet)")
		return errUsage
	}
	var current sites.Source = sites.FileSource{Path: *against}
	next, err := sites.Load(pos[0])
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return errReported
	}
	old, err := current.Current(ctx)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return errReported
	}
	fmt.Fprintf(e.stdout, "Comparing %s against %s.\n\n", pos[0], current)
	_, err = fmt.Fprint(e.stdout, sites.RenderPlan(sites.Diff(old, next)))
	return err
}
