package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/civicwifi/civicwifi/controller/apiclient"
)

// enroll makes a gateway's key pair (or the controller's own signing key) and prints what to write where.
func enroll(_ context.Context, e *env, args []string) error {
	fs := newFlags("enroll", e)
	out := fs.String("out", ".", "the directory to write name.key and name.pub in (created 0700 if missing)")
	name := fs.String("name", "", "the gateway's id as in sites.yaml (or \"controller\" for the controller's signing key)")
	pos, err := parseInterspersed(fs, args)
	if err != nil || len(pos) != 0 || *name == "" {
		return errUsage
	}
	dir, err := filepath.Abs(*out)
	if err != nil {
		return err
	}
	en, err := apiclient.Enroll(dir, *name)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s (private, mode 0600) and %s\n", en.KeyFile, en.PublicKeyFile)
	if *name == "controller" {
		fmt.Fprintf(e.stdout, "In controller.yaml:\n  signing_key: %s\n", en.KeyFile)
		fmt.Fprintf(e.stdout, "Give each gateway the controller's public key (%s):\n  %s\n", en.PublicKeyFile, en.PublicKeyLine)
		return nil
	}
	fmt.Fprintf(e.stdout, "Install %s on gateway %s only. On the controller keep %s and add to its site in sites.yaml:\n",
		en.KeyFile, *name, en.PublicKeyFile)
	fmt.Fprintf(e.stdout, "      - id: %s\n        credential: file:%s\n", *name, en.PublicKeyFile)
	return nil
}
