package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"
)

// DefaultSocket is where the daemon listens unless told otherwise.
const DefaultSocket = "/run/civicwifi/portal.sock"

// APIClient talks to a Server over its unix socket. It implements Service.
// (It is not called Client because Client is the wire type for a device.)
type APIClient struct {
	path string
	http *http.Client
}

var _ Service = (*APIClient)(nil)

// NewClient returns a client for the daemon listening at path. Each call
// is bounded by a 30s timeout as well as by its context.
func NewClient(path string) *APIClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns:    1,
		IdleConnTimeout: 30 * time.Second,
	}
	return &APIClient{path: path, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// APIError is an error answer from the daemon. errors.Is(err, ErrBadRequest)
// and errors.Is(err, ErrNotFound) hold for 400 and 404 answers.
type APIError struct {
	Status  int    // HTTP status
	Message string // the server's message
}

func (e *APIError) Error() string { return e.Message }

// Unwrap maps the status back to the package's sentinel errors.
func (e *APIError) Unwrap() error {
	switch e.Status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return ErrBadRequest
	case http.StatusNotFound:
		return ErrNotFound
	}
	return nil
}

// Status asks for the gateway's health summary.
func (c *APIClient) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// Clients lists the devices the gateway has seen.
func (c *APIClient) Clients(ctx context.Context) ([]Client, error) {
	var cs []Client
	err := c.do(ctx, http.MethodGet, "/v1/clients", nil, &cs)
	return cs, err
}

// Allow opens a session.
func (c *APIClient) Allow(ctx context.Context, req AllowRequest) (Session, error) {
	var s Session
	err := c.do(ctx, http.MethodPost, "/v1/allow", req, &s)
	return s, err
}

// Kick ends a session.
func (c *APIClient) Kick(ctx context.Context, req KickRequest) (Session, error) {
	var s Session
	err := c.do(ctx, http.MethodPost, "/v1/kick", req, &s)
	return s, err
}

func (c *APIClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encoding request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://portal"+path, body)
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.dialError(method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("reading answer to %s %s: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
			eb.Error = fmt.Sprintf("%s %s: %s: %.200q", method, path, resp.Status, b)
		}
		return &APIError{Status: resp.StatusCode, Message: eb.Error}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("decoding answer to %s %s: %w", method, path, err)
	}
	return nil
}

// dialError turns the usual ways of not reaching the daemon into advice.
func (c *APIClient) dialError(method, path string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("portal daemon not running? no socket at %s", c.path)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("portal daemon not running? nothing listens on %s (stale socket)", c.path)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("permission denied on %s (run as root or as a member of the socket's group)", c.path)
	}
	return fmt.Errorf("calling %s %s on %s: %w", method, path, c.path, err)
}
