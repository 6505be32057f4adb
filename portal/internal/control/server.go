package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// MaxRequestBytes bounds a request body; larger bodies get 413.
const MaxRequestBytes = 64 << 10

// maxSocketPath is the room in sockaddr_un.sun_path (108 bytes with the NUL).
const maxSocketPath = 107

// errForbidden marks a peer that is neither root, the daemon's own user, nor
// in the socket's group (HTTP 403).
var errForbidden = errors.New("permission denied")

// Server serves a Service as JSON over HTTP on a unix socket.
type Server struct {
	svc Service
	log *slog.Logger

	// GID is the group given the socket file (mode 0660, owner root) when the
	// daemon runs as root; members whose primary group it is may use the API.
	// Zero (root) unless set before Serve.
	GID int
	// ShutdownTimeout bounds the graceful shutdown; 5s if zero.
	ShutdownTimeout time.Duration

	mu        sync.Mutex
	ready     chan struct{} // closed once the socket accepts connections
	readyOnce sync.Once
	sockGID   uint32 // group of the socket file, allowed besides root and ourselves
}

// NewServer returns a server for svc; nothing listens until Serve.
func NewServer(svc Service, log *slog.Logger) *Server {
	return &Server{svc: svc, log: log, ready: make(chan struct{})}
}

// Serve listens on the unix socket at path and answers until ctx is
// cancelled, then shuts down gracefully and returns nil. It refuses to start
// if another daemon is listening on path, replaces a stale socket file (one
// nobody listens on), and never removes a file that is not a socket.
func (s *Server) Serve(ctx context.Context, path string) error {
	ln, fi, err := s.listen(path)
	if err != nil {
		return err
	}
	defer s.removeSocket(path, fi)

	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		// Requests are not cancelled by ctx: Shutdown lets them finish.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			cred, err := readPeerCred(c)
			return context.WithValue(ctx, peerKey{}, peerInfo{cred: cred, err: err})
		},
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("control socket listening", "path", path)
	s.readyOnce.Do(func() { close(s.ready) })

	select {
	case err := <-errc:
		return fmt.Errorf("serving control socket %s: %w", path, err)
	case <-ctx.Done():
	}
	timeout := s.ShutdownTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		s.log.Warn("control socket shutdown timed out; closing connections", "timeout", timeout, "err", err)
		srv.Close()
	}
	<-errc // http.ErrServerClosed
	s.log.Info("control socket closed", "path", path)
	return nil
}

// listen creates the socket under a temporary name, sets its mode and owner,
// then renames it into place, so it is never reachable with the wrong
// permissions.
func (s *Server) listen(path string) (*net.UnixListener, os.FileInfo, error) {
	if len(path) > maxSocketPath {
		return nil, nil, fmt.Errorf("socket path %q is %d bytes long (at most %d)", path, len(path), maxSocketPath)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("creating socket directory: %w", err)
	}
	if err := s.clearStale(path); err != nil {
		return nil, nil, err
	}
	tmp := filepath.Join(dir, fmt.Sprintf(".ctl%d.sock", os.Getpid()))
	if len(tmp) > maxSocketPath {
		tmp = path // no room for a temporary name: chmod right after bind
	} else {
		_ = os.Remove(tmp) // a leftover of a crashed daemon with our PID
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // we unlink path ourselves, and only if it is still ours
	fail := func(err error) (*net.UnixListener, os.FileInfo, error) {
		ln.Close()
		os.Remove(tmp)
		return nil, nil, err
	}
	if err := os.Chmod(tmp, 0o660); err != nil {
		return fail(fmt.Errorf("setting mode of %s: %w", path, err))
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(tmp, 0, s.GID); err != nil {
			return fail(fmt.Errorf("setting owner of %s: %w", path, err))
		}
	}
	if tmp != path {
		if err := os.Rename(tmp, path); err != nil {
			return fail(fmt.Errorf("moving socket into place at %s: %w", path, err))
		}
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("checking socket %s: %w", path, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.mu.Lock()
		s.sockGID = st.Gid
		s.mu.Unlock()
	}
	return ln, fi, nil
}

// clearStale removes a socket file nobody listens on; it refuses if a
// daemon answers there or if the file is not a socket.
func (s *Server) clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking %s: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket (%s); not removing it", path, fi.Mode().Type())
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("another daemon is already listening on %s", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probing existing socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	s.log.Info("removed stale control socket", "path", path)
	return nil
}

// removeSocket unlinks path if it is still the socket we created.
func (s *Server) removeSocket(path string, ours os.FileInfo) {
	fi, err := os.Lstat(path)
	if err != nil || !os.SameFile(fi, ours) {
		return
	}
	if err := os.Remove(path); err != nil {
		s.log.Warn("removing control socket", "path", path, "err", err)
	}
}

type peerKey struct{}

type peerInfo struct {
	cred peerCred
	err  error
}

// authorize admits root, the daemon's own user, and the socket's group.
// File permissions already keep others out; this is the second lock.
func (s *Server) authorize(ctx context.Context) (peerInfo, error) {
	p, ok := ctx.Value(peerKey{}).(peerInfo)
	if !ok {
		return p, fmt.Errorf("%w: no peer credentials on this connection", errForbidden)
	}
	if errors.Is(p.err, errPeerCredUnsupported) {
		return p, nil
	}
	if p.err != nil {
		return p, fmt.Errorf("%w: %v", errForbidden, p.err)
	}
	s.mu.Lock()
	gid := s.sockGID
	s.mu.Unlock()
	if p.cred.UID == 0 || p.cred.UID == uint32(os.Geteuid()) || p.cred.GID == gid {
		return p, nil
	}
	return p, fmt.Errorf("%w: uid %d (gid %d) is neither root nor in group %d", errForbidden, p.cred.UID, p.cred.GID, gid)
}

type route struct {
	method string
	serve  func(*Server, http.ResponseWriter, *http.Request) (any, error)
}

var routes = map[string]route{
	"/v1/status":  {http.MethodGet, (*Server).status},
	"/v1/clients": {http.MethodGet, (*Server).clients},
	"/v1/allow":   {http.MethodPost, (*Server).allow},
	"/v1/kick":    {http.MethodPost, (*Server).kick},
}

// ServeHTTP routes the four endpoints; every answer, errors included, is JSON.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	peer, err := s.authorize(r.Context())
	log := s.log.With("method", r.Method, "path", r.URL.Path, "peer_uid", peer.cred.UID, "peer_pid", peer.cred.PID)
	if err != nil {
		log.Warn("control request refused", "err", err)
		writeError(w, http.StatusForbidden, err)
		return
	}
	rt, ok := routes[r.URL.Path]
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Errorf("no endpoint %s (try /v1/status, /v1/clients, /v1/allow, /v1/kick)", r.URL.Path))
		return
	}
	if r.Method != rt.method {
		w.Header().Set("Allow", rt.method)
		writeError(w, http.StatusMethodNotAllowed, fmt.Errorf("%s wants %s, not %s", r.URL.Path, rt.method, r.Method))
		return
	}
	v, err := rt.serve(s, w, r)
	if err != nil {
		code := statusOf(err)
		lvl := slog.LevelInfo
		if code >= 500 && r.Context().Err() == nil { // not just a client that went away
			lvl = slog.LevelError
		}
		log.Log(r.Context(), lvl, "control request failed", "status", code, "err", err, "took", time.Since(start))
		writeError(w, code, err)
		return
	}
	log.Debug("control request", "status", http.StatusOK, "took", time.Since(start))
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.svc.Status(r.Context())
}

func (s *Server) clients(w http.ResponseWriter, r *http.Request) (any, error) {
	cs, err := s.svc.Clients(r.Context())
	if cs == nil {
		cs = []Client{} // [] on the wire, never null
	}
	return cs, err
}

func (s *Server) allow(w http.ResponseWriter, r *http.Request) (any, error) {
	var req AllowRequest
	if err := decodeRequest(http.MaxBytesReader(w, r.Body, MaxRequestBytes), &req); err != nil {
		return nil, err
	}
	req, err := req.Normalized()
	if err != nil {
		return nil, err
	}
	if req.Method == "" {
		req.Method = "ctl" // whoever is on this socket is a local administrator
	}
	sess, err := s.svc.Allow(r.Context(), req)
	if err != nil {
		return nil, err
	}
	s.log.Info("session allowed", "mac", sess.MAC, "ip", sess.IP, "session", sess.ID, "method", sess.Method, "peer_uid", peerUID(r))
	return sess, nil
}

func (s *Server) kick(w http.ResponseWriter, r *http.Request) (any, error) {
	var req KickRequest
	if err := decodeRequest(http.MaxBytesReader(w, r.Body, MaxRequestBytes), &req); err != nil {
		return nil, err
	}
	req, err := req.Normalized()
	if err != nil {
		return nil, err
	}
	sess, err := s.svc.Kick(r.Context(), req)
	if err != nil {
		return nil, err
	}
	s.log.Info("session kicked", "mac", sess.MAC, "ip", sess.IP, "session", sess.ID, "reason", req.Reason, "peer_uid", peerUID(r))
	return sess, nil
}

func peerUID(r *http.Request) uint32 {
	p, _ := r.Context().Value(peerKey{}).(peerInfo)
	return p.cred.UID
}

// decodeRequest decodes exactly one JSON object into v, rejecting unknown
// fields and trailing data. Every error wraps ErrBadRequest, except a body
// over the limit, which is an *http.MaxBytesError.
func decodeRequest(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return fmt.Errorf("%w: request body has data after the JSON object", ErrBadRequest)
	}
	return nil
}

func decodeError(err error) error {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		ute *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return err
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%w: request body is empty (want a JSON object)", ErrBadRequest)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: request body is truncated JSON", ErrBadRequest)
	case errors.As(err, &se):
		return fmt.Errorf("%w: request body is not JSON: %s (at byte %d)", ErrBadRequest, strings.TrimPrefix(se.Error(), "json: "), se.Offset)
	case errors.As(err, &ute):
		if ute.Field == "" {
			return fmt.Errorf("%w: request body must be a JSON object, not %s", ErrBadRequest, ute.Value)
		}
		return fmt.Errorf("%w: field %q must be a %s, not %s", ErrBadRequest, ute.Field, ute.Type, ute.Value)
	default:
		// Unknown fields come as `json: unknown field "x"`.
		return fmt.Errorf("%w: %s", ErrBadRequest, strings.TrimPrefix(err.Error(), "json: "))
	}
}

// statusOf maps an error to its HTTP status.
func statusOf(err error) int {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	default:
		return http.StatusInternalServerError
	}
}

// errorBody is the JSON shape of every error answer.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, err error) {
	msg := err.Error()
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		msg = fmt.Sprintf("request body is larger than %d bytes", mbe.Limit)
	}
	writeJSON(w, code, errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		code = http.StatusInternalServerError
		buf.Reset()
		fmt.Fprintf(&buf, "{\"error\": %q}\n", "encoding response: "+err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}
