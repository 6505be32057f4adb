package main

import (
	"context"
	"os"

	"github.com/civicwifi/civicwifi/controller/internal/sites"
)

func schema(_ context.Context, e *env, args []string) error {
	fs := newFlags("schema", e)
	out := fs.String("o", "", "write to this file instead of standard output")
	pos, err := parseInterspersed(fs, args)
	if err != nil || len(pos) != 0 {
		return errUsage
	}
	b, err := sites.Schema()
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = e.stdout.Write(b)
		return err
	}
	return os.WriteFile(*out, b, 0o644)
}
