// Package server is the controller daemon's glue: it loads sites.yaml into an immutable snapshot (each site's
// policy as apiclient.SitePolicy JSON with its hash as version, each AP's desired config, each gateway's key
// reference), adapts the Store and the snapshot to the interfaces of gwapi (gateways) and apapi (access points),
// serves both on one mux with /healthz, and reloads sites.yaml on SIGHUP or when the file changes. A file with
// any problem never replaces the running one: every problem is logged with file:line:col and the old snapshot
// keeps being served; a good one wakes the gateways' policy long polls at once.
package server

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/apapi"
	"github.com/civicwifi/civicwifi/controller/internal/gwapi"
	"github.com/civicwifi/civicwifi/controller/internal/login"
	"github.com/civicwifi/civicwifi/controller/internal/login/sms"
	"github.com/civicwifi/civicwifi/controller/internal/login/spid"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/civicwifi/civicwifi/internal/yamlconf"
	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Server. SitesPath, Store and SigningKey are required.
type Options struct {
	SitesPath    string
	Store        store.Store
	SigningKey   ed25519.PrivateKey
	EnrollTokens []string // AP first-boot enrollment tokens; none: no AP can enroll

	APCheckin        time.Duration  // zero: apapi's default (60 s)
	APMissedCheckins int            // zero: apapi's default (3)
	ReloadCheck      time.Duration  // how often sites.yaml is re-read to look for a change; zero: 2 s
	MaxWait          time.Duration  // longest gateway long poll; zero: gwapi's default (30 s)
	Recheck          time.Duration  // a long poll also re-reads its state this often; zero: only when woken
	Bus              Bus            // wakes other replicas' command long polls; nil: a single controller
	SMSAccounting    sms.Accounting // SMS cost and daily budget for the metrics (stats.Metrics); nil: none

	// Login is controller.yaml's login block: with a pepper file, the resident login endpoints (SMS, voucher,
	// remembered device) are mounted on the gateway API. Zero: off.
	Login login.FileConfig
	// SPID is controller.yaml's spid block: the SAML service provider of SPID/CIE login (needs Login). Zero: off.
	SPID SPIDConfig
	// AppliedCopy, if set, is kept equal to the sites.yaml being served (written after each apply), so that
	// `controller plan` compares a new file with what runs.
	AppliedCopy string

	Log        *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: no metrics
}

// Server is the controller: the gateway and access point APIs over one Store and the running sites.yaml.
type Server struct {
	o    Options
	log  *slog.Logger
	st   store.Store
	snap atomic.Pointer[snapshot]
	keys *keys
	gw   *gwapi.Server
	lg   *login.Server // nil when login is off
	sp   *spid.SP      // nil when SPID is off
	ap   *apapi.Server
	mux  *http.ServeMux

	noWatch bool // tests: only the timer and SIGHUP

	reloadMu sync.Mutex
	lastSeen [32]byte // the bytes last looked at, good or bad: a bad file is reported once, not every check

	reloads   *prometheus.CounterVec
	lastGood  prometheus.Gauge
	sitesGood prometheus.Gauge
}

// New loads sites.yaml (refusing to start on any problem in it) and builds the APIs.
func New(o Options) (*Server, error) {
	if o.SitesPath == "" || o.Store == nil || len(o.SigningKey) != ed25519.PrivateKeySize {
		return nil, errors.New("server: SitesPath, Store and SigningKey are required")
	}
	if o.ReloadCheck <= 0 {
		o.ReloadCheck = 2 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{o: o, log: o.Log, st: o.Store, mux: http.NewServeMux()}
	s.keys = &keys{srv: s, retry: keyRetry}
	s.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "civicwifi_controller_sites_reloads_total",
		Help: "sites.yaml loads by result (applied, unchanged, rejected).",
	}, []string{"result"})
	s.lastGood = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "civicwifi_controller_sites_loaded_timestamp_seconds",
		Help: "When the running sites.yaml was applied.",
	})
	s.sitesGood = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "civicwifi_controller_sites_last_reload_ok",
		Help: "1 if the last sites.yaml read was applied (or unchanged), 0 if it was rejected and an older one is served.",
	})
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{s.reloads, s.lastGood, s.sitesGood} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("server: registering metrics: %w", err)
			}
		}
	}
	data, err := os.ReadFile(o.SitesPath)
	if err != nil {
		return nil, fmt.Errorf("reading sites file: %w", err)
	}
	cfg, err := sites.Parse(o.SitesPath, data)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	snap, err := newSnapshot(cfg, sum)
	if err != nil {
		return nil, err
	}
	s.apply(context.Background(), snap, nil)
	s.lastSeen = sum
	s.keepCopy(data)

	s.gw, err = gwapi.New(gwapi.Config{
		Keys: s.keys, Nonces: nonces{o.Store}, Policies: policies{s}, Sink: sink{o.Store}, Commands: commands{s},
		SigningKey: o.SigningKey, Log: o.Log.With("component", "gwapi"), Registerer: o.Registerer,
		MaxWait: o.MaxWait, Recheck: o.Recheck,
	})
	if err != nil {
		return nil, err
	}
	if o.Login.Enabled() {
		s.lg, err = login.Setup(o.Login, login.Deps{Sites: s.Config, Store: o.Store, SigningKey: o.SigningKey, Log: o.Log, Registerer: o.Registerer,
			Accounting: o.SMSAccounting})
		if err != nil {
			return nil, err
		}
		s.lg.Register(s.gw)
	}
	if o.SPID.Enabled() {
		s.sp, err = newSPID(o.SPID, s.lg, o.Login.PepperFile, o.Store, s.Config, o.Log, o.Registerer)
		if err != nil {
			return nil, err
		}
		s.sp.Register(s.gw)
		s.mux.Handle("/spid/", s.sp.Handler())
	}
	s.ap, err = apapi.New(apapi.Options{
		Desired: desired{s}, Registry: registry{s}, Enroll: apapi.NewEnrollTokens(o.EnrollTokens...),
		Interval: o.APCheckin, MissedCheckins: o.APMissedCheckins, Log: o.Log,
	})
	if err != nil {
		return nil, err
	}
	if o.Registerer != nil {
		if err := o.Registerer.Register(fleet{s}); err != nil {
			return nil, fmt.Errorf("server: registering metrics: %w", err)
		}
	}
	if len(o.EnrollTokens) == 0 {
		s.log.Warn("no AP enrollment token configured: new access points cannot enroll")
	}
	s.mux.Handle("/v1/", s.gw.Handler())
	s.mux.Handle(apapi.PathProvision, s.ap.Handler())
	s.mux.Handle(apapi.PathCheckin, s.ap.Handler())
	s.mux.HandleFunc("GET /healthz", s.healthz)
	return s, nil
}

// Handler serves the gateway API (/v1/), the AP API (/ap/v1/) and /healthz.
func (s *Server) Handler() http.Handler { return s.mux }

// Handle mounts h on the API's mux under pattern, beside /v1/ and /ap/v1/ (the SPID browser endpoints under
// /spid/, for one). Call it before serving.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Config returns the running sites.yaml.
func (s *Server) Config() *sites.Config { return s.snap.Load().cfg }

// Gateways returns the gateway API (to wake long polls after queueing commands from elsewhere).
func (s *Server) Gateways() *gwapi.Server { return s.gw }

// Login returns the resident login endpoints (nil when controller.yaml has no login block), for the SPID routes.
func (s *Server) Login() *login.Server { return s.lg }

// AccessPoints returns the AP API (for its offline view).
func (s *Server) AccessPoints() *apapi.Server { return s.ap }

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	// The store answers a read: a controller whose store is gone is not healthy.
	if _, err := s.st.Gateway(ctx, "healthz"); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Warn("health check: store", "err", err)
		http.Error(w, "store unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "ok sites=%x\n", s.snap.Load().sum[:6])
}

// apply swaps snap in, logs what changed against old (nil at start), and wakes every policy long poll.
func (s *Server) apply(ctx context.Context, snap *snapshot, old *snapshot) {
	for _, err := range s.keys.reset(snap) {
		s.log.Warn("gateway key unreadable: the gateway is refused until it is fixed", "err", err)
	}
	s.snap.Store(snap)
	s.lastGood.SetToCurrentTime()
	s.sitesGood.Set(1)
	if old == nil {
		s.log.Info("sites.yaml loaded", "file", s.o.SitesPath, "sites", len(snap.cfg.Sites), "policies", len(snap.cfg.Policies),
			"gateways", len(snap.gateways), "access_points", len(snap.desired))
		return
	}
	changes := sites.Diff(old.cfg, snap.cfg)
	s.log.Info("sites.yaml applied", "file", s.o.SitesPath, "changes", len(changes), "plan", sites.RenderPlan(changes))
	changedSites := 0
	for id, doc := range snap.policies {
		if o, ok := old.policies[id]; !ok || o.version != doc.version {
			changedSites++
		}
	}
	if err := s.st.AppendAudit(ctx, store.AuditEntry{
		At: time.Now(), Actor: "sites.yaml reload", Action: "sites.apply", Target: s.o.SitesPath,
		Detail: fmt.Sprintf("%d changes, %d site policies changed", len(changes), changedSites),
	}); err != nil {
		s.log.Warn("auditing the reload", "err", err)
	}
	if s.gw != nil {
		s.gw.NotifyAllPolicies()
	}
}

// ErrUnchanged is returned by Reload when the file's bytes are those already looked at.
var ErrUnchanged = errors.New("sites.yaml unchanged")

// Reload reads sites.yaml and applies it if it is valid and differs from the running one. With force, a file
// already looked at is read again (SIGHUP: the operator asks, and key files may have changed). A file with
// problems is logged, one line per problem with file:line:col, and returned as the error; the running
// configuration stays.
func (s *Server) Reload(ctx context.Context, force bool) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	data, err := os.ReadFile(s.o.SitesPath)
	if err != nil {
		s.reloads.WithLabelValues("rejected").Inc()
		s.sitesGood.Set(0)
		s.log.Error("reading sites.yaml; keeping the running configuration", "file", s.o.SitesPath, "err", err)
		return fmt.Errorf("reading sites file: %w", err)
	}
	sum := sha256.Sum256(data)
	if sum == s.lastSeen && !force {
		return ErrUnchanged
	}
	s.lastSeen = sum
	old := s.snap.Load()
	cfg, err := sites.Parse(s.o.SitesPath, data)
	if err != nil {
		s.reloads.WithLabelValues("rejected").Inc()
		s.sitesGood.Set(0)
		var ps *yamlconf.Problems
		if errors.As(err, &ps) {
			for _, p := range ps.List {
				s.log.Error("sites.yaml problem", "problem", p.Error())
			}
		}
		s.log.Error("sites.yaml rejected; keeping the running configuration", "file", s.o.SitesPath,
			"problems", countProblems(err), "running", fmt.Sprintf("%x", old.sum[:6]))
		return err
	}
	if sum == old.sum && !force {
		s.reloads.WithLabelValues("unchanged").Inc()
		s.sitesGood.Set(1)
		s.log.Info("sites.yaml is the running one again", "file", s.o.SitesPath)
		return ErrUnchanged
	}
	snap, err := newSnapshot(cfg, sum)
	if err != nil {
		s.reloads.WithLabelValues("rejected").Inc()
		return err
	}
	s.apply(ctx, snap, old)
	s.keepCopy(data)
	s.reloads.WithLabelValues("applied").Inc()
	return nil
}

// keepCopy writes the applied sites.yaml to Options.AppliedCopy, atomically. A failure is logged: serving goes
// on, only `controller plan` is affected.
func (s *Server) keepCopy(data []byte) {
	if s.o.AppliedCopy == "" {
		return
	}
	tmp := s.o.AppliedCopy + ".tmp"
	err := os.MkdirAll(filepath.Dir(s.o.AppliedCopy), 0o750)
	if err == nil {
		err = os.WriteFile(tmp, data, 0o640)
	}
	if err == nil {
		err = os.Rename(tmp, s.o.AppliedCopy)
	}
	if err != nil {
		s.log.Warn("keeping a copy of the running sites.yaml (for controller plan)", "path", s.o.AppliedCopy, "err", err)
	}
}

func countProblems(err error) int {
	var ps *yamlconf.Problems
	if errors.As(err, &ps) {
		return len(ps.List)
	}
	return 1
}

// Run reloads sites.yaml until ctx ends (it returns nil then): as soon as anything changes in the file's
// directory (fsnotify: an editor's atomic rename, a git checkout, a Kubernetes ConfigMap's symlink swap), at once
// on SIGHUP, and every ReloadCheck in any case (file systems without notifications, a missed event). The file
// is compared by content, so spurious events cost one read.
func (s *Server) Run(ctx context.Context) error {
	if s.o.Bus != nil {
		busDone := make(chan struct{})
		defer func() { <-busDone }()
		go func() {
			defer close(busDone)
			if err := s.o.Bus.Run(ctx, s.gw.NotifyCommands); err != nil {
				s.log.Error("listening to the other replicas", "err", err)
			}
		}()
	}
	retDone := make(chan struct{})
	defer func() { <-retDone }()
	go func() {
		defer close(retDone)
		s.retention(ctx)
	}()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	t := time.NewTicker(s.o.ReloadCheck)
	defer t.Stop()
	var events <-chan fsnotify.Event
	var watchErrs <-chan error
	if s.noWatch {
		// tests of the fallback
	} else if w, err := fsnotify.NewWatcher(); err != nil {
		s.log.Warn("watching sites.yaml; checking it every interval only", "interval", s.o.ReloadCheck, "err", err)
	} else {
		defer w.Close()
		if err := w.Add(filepath.Dir(s.o.SitesPath)); err != nil {
			s.log.Warn("watching sites.yaml; checking it every interval only", "interval", s.o.ReloadCheck, "err", err)
		}
		events, watchErrs = w.Events, w.Errors
	}
	// Changes come in bursts (write, chmod, rename): wait for a short quiet spell before reading.
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	for {
		force := false
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			s.log.Info("SIGHUP: reloading sites.yaml", "file", s.o.SitesPath)
			force = true
		case <-events:
			settle.Reset(settleDelay)
			continue
		case err := <-watchErrs:
			s.log.Warn("watching sites.yaml", "err", err)
			continue
		case <-settle.C:
		case <-t.C:
		}
		s.Reload(ctx, force) // logged inside
	}
}

// settleDelay is how long the directory must be quiet after a change before sites.yaml is read.
const settleDelay = 50 * time.Millisecond

// EnqueueCommand queues a remote operation for every gateway of site (a client may roam between a site's
// gateways) and wakes their command long polls. c's GatewayID is ignored. It returns the queued commands.
func (s *Server) EnqueueCommand(ctx context.Context, site string, c store.Command, actor string) ([]store.Command, error) {
	st := s.snap.Load().cfg.Site(site)
	if st == nil {
		return nil, fmt.Errorf("queueing %s: %w: no site %q in sites.yaml", c.Kind, store.ErrInvalid, site)
	}
	var out []store.Command
	for _, g := range st.Gateways {
		x := c
		x.ID, x.GatewayID = "", g.ID
		q, err := s.st.Enqueue(ctx, x)
		if err != nil {
			return out, fmt.Errorf("queueing %s for %s: %w", c.Kind, g.ID, err)
		}
		out = append(out, q)
		if err := s.st.AppendAudit(ctx, store.AuditEntry{
			At: time.Now(), Actor: actor, Action: "command." + string(q.Kind), Target: q.ClientMAC, Detail: g.ID + " " + q.ID,
		}); err != nil {
			s.log.Warn("auditing a command", "err", err)
		}
	}
	s.gw.NotifyCommands(site)
	if s.o.Bus != nil {
		if err := s.o.Bus.Publish(ctx, site); err != nil {
			// Queued all the same: a gateway polling another replica gets it at its next poll.
			s.log.Warn("waking the other replicas", "site", site, "err", err)
		}
	}
	return out, nil
}
