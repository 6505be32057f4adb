package main

import (
	"context"
	"fmt"
	"os"

	"github.com/civicwifi/civicwifi/controller/internal/server"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
)

func plan(ctx context.Context, e *env, args []string) error {
	fs := newFlags("plan", e)
	against := fs.String("against", "", "the sites.yaml to compare with (default: the one the running controller serves)")
	config := fs.String("config", "/etc/civicwifi/controller.yaml", "the controller's own config file (to find the running sites.yaml)")
	pos, err := parseInterspersed(fs, args)
	if err != nil || len(pos) != 1 {
		return errUsage
	}
	if *against == "" {
		// The running controller keeps a copy of the file it serves in its state directory.
		cfg, err := server.LoadConfig(*config)
		if err != nil {
			fmt.Fprintln(e.stderr, err)
			return errReported
		}
		*against = cfg.AppliedCopy()
		if _, err := os.Stat(*against); err != nil {
			fmt.Fprintf(e.stderr, "controller plan: no running sites.yaml at %s (is the controller running with this config?); compare two files with --against\n", *against)
			return errReported
		}
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
