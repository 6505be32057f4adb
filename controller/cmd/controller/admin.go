package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/civicwifi/civicwifi/controller/internal/dashboard/auth"
	"golang.org/x/sys/unix"
)

// adminStdin is where `controller admin add` reads the password (tests replace it).
var adminStdin io.Reader = os.Stdin

// minPassword is the shortest password accepted (NIST SP 800-63B asks at least 8; admins get more).
const minPassword = 12

// admin is `controller admin add|list`: the dashboard's password accounts. The file keeps only argon2id
// hashes; the password is read from stdin (twice and without echo on a terminal), never from the command line.
func admin(_ context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return errUsage
	}
	sub, args := args[0], args[1:]
	fs := newFlags("admin "+sub, e)
	path := fs.String("accounts", "/etc/civicwifi/admin-accounts", "the dashboard's accounts file (mode 0600)")
	role := fs.String("role", "operator", "it (everything), operator (read and kick) or auditor (reports and audit log)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return errUsage
	}
	switch sub {
	case "list":
		if len(pos) != 0 {
			return errUsage
		}
		accts, err := auth.LoadAccounts(*path)
		if err != nil {
			return err
		}
		for _, a := range accts {
			fmt.Fprintf(e.stdout, "%s\t%s\n", a.Name, a.Role)
		}
		return nil
	case "add":
	default:
		return errUsage
	}
	if len(pos) != 1 {
		return errUsage
	}
	name := pos[0]
	r, err := auth.ParseRole(*role)
	if err != nil {
		return err
	}
	if err := auth.CheckName(name); err != nil {
		return err
	}
	pw, err := readPassword(e, adminStdin)
	if err != nil {
		return err
	}
	if n := len([]rune(pw)); n < minPassword {
		return fmt.Errorf("the password has %d characters: give at least %d (nothing written)", n, minPassword)
	}
	h, err := auth.HashPassword(pw)
	if err != nil {
		return err
	}
	if err := auth.SetAccount(*path, auth.Account{Name: name, Role: r, Hash: h}); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s (%s) written to %s; the running controller uses it at the next sign-in\n", name, r, *path)
	return nil
}

// readPassword reads one line; on a terminal it asks twice with echo off.
func readPassword(e *env, in io.Reader) (string, error) {
	f, ok := in.(*os.File)
	if ok {
		if t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			noEcho := *t
			noEcho.Lflag &^= unix.ECHO
			if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, &noEcho); err != nil {
				return "", fmt.Errorf("turning off the terminal's echo: %w", err)
			}
			defer unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, t)
			br := bufio.NewReader(f)
			fmt.Fprint(e.stderr, "password: ")
			a, err := br.ReadString('\n')
			fmt.Fprint(e.stderr, "\nagain: ")
			b, err2 := br.ReadString('\n')
			fmt.Fprintln(e.stderr)
			if err != nil || err2 != nil {
				return "", errors.New("reading the password: input ended")
			}
			if a != b {
				return "", errors.New("the two passwords differ (nothing written)")
			}
			return strings.TrimRight(a, "\r\n"), nil
		}
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", errors.New("reading the password from stdin: give it on the first line")
	}
	return strings.TrimRight(line, "\r\n"), nil
}
