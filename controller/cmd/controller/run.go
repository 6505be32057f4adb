package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/dashboard"
	"github.com/civicwifi/civicwifi/controller/internal/server"
	"github.com/civicwifi/civicwifi/controller/internal/sites"
	"github.com/civicwifi/civicwifi/controller/internal/stats"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/civicwifi/civicwifi/controller/internal/store/boltstore"
	"github.com/civicwifi/civicwifi/controller/internal/store/redisstore"
	"github.com/civicwifi/civicwifi/internal/httpserve"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
)

// maxWait is the longest gateway long poll; the API's write timeout leaves room for it.
const maxWait = 30 * time.Second

// started, when set (by in-process tests), is called with the running server and its store.
var started func(*server.Server, store.Store)

// runDaemon is `controller run -config controller.yaml`: the controller until SIGINT/SIGTERM.
func runDaemon(ctx context.Context, e *env, args []string) error {
	fs := newFlags("run", e)
	path := fs.String("config", "/etc/civicwifi/controller.yaml", "the controller's own config file")
	pos, err := parseInterspersed(fs, args)
	if err != nil || len(pos) != 0 {
		return errUsage
	}
	cfg, err := server.LoadConfig(*path)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return errReported
	}
	var h slog.Handler = slog.NewJSONHandler(e.stderr, nil)
	if cfg.LogFormat == "text" {
		h = slog.NewTextHandler(e.stderr, nil)
	}
	log := slog.New(h)

	// sites.yaml is checked before anything is opened or created: a controller that cannot start changes nothing.
	town, err := sites.Load(cfg.Sites)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return errReported
	}
	key, err := apiclient.LoadPrivateKey(cfg.SigningKey)
	if err != nil {
		return fmt.Errorf("loading the signing key: %w", err)
	}
	tokens, err := readTokens(cfg.APEnrollTokens)
	if err != nil {
		return err
	}
	var tlsCfg *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("loading the TLS certificate: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	// Days (daily rollups, distinct users, reports) are the town's.
	st, err := openStore(ctx, cfg, town.Town.Timezone, log)
	if err != nil {
		return err
	}
	defer st.Close()
	bus, closeBus, err := openBus(cfg, log)
	if err != nil {
		return err
	}
	defer closeBus()
	var b server.Bus
	if bus != nil {
		b = bus
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Store latency, SMS cost and budget (package stats), around the store every part uses.
	metrics, err := stats.NewMetrics(reg)
	if err != nil {
		return err
	}
	st = metrics.Instrument(st)
	srv, err := server.New(server.Options{
		SitesPath: cfg.Sites, Store: st, SigningKey: key, EnrollTokens: tokens, AppliedCopy: cfg.AppliedCopy(),
		APCheckin: cfg.APCheckin, APMissedCheckins: cfg.APMissedCheckins, ReloadCheck: cfg.Reload, MaxWait: maxWait,
		Bus: b, Login: cfg.Login, SPID: cfg.SPID, SMSAccounting: metrics,
		Log: log, Registerer: reg,
	})
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return errReported
	}
	// Sites, gateways and access points up, residents online: read from the store at each scrape.
	if err := reg.Register(stats.NewCollector(st, srv.Config, stats.CollectorOptions{Log: log.With("component", "stats")})); err != nil {
		return fmt.Errorf("registering the statistics: %w", err)
	}
	// The operators' dashboard: on the API's listener under /admin/, or on its own (an internal address).
	api := srv.Handler()
	var dash *dashboard.Dashboard
	if cfg.Admin.Enabled() {
		deps := dashboard.Deps{Store: st, Sites: srv.Config, Commands: srv, Gatherer: reg, Log: log.With("component", "dashboard")}
		if lg := srv.Login(); lg != nil {
			deps.Vouchers = lg.Vouchers() // the same pepper: printed codes redeem
		}
		if dash, err = dashboard.Setup(ctx, cfg.Admin, deps); err != nil {
			return fmt.Errorf("setting up the dashboard: %w", err)
		}
		if cfg.Admin.Listen == "" {
			api = dashboard.Mount(api, dash)
		}
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening for the API: %w", err)
	}
	var mln, aln net.Listener
	if cfg.MetricsListen != "" {
		if mln, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			ln.Close()
			return fmt.Errorf("listening for metrics: %w", err)
		}
	}
	if dash != nil && cfg.Admin.Listen != "" {
		if aln, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
			ln.Close()
			if mln != nil {
				mln.Close()
			}
			return fmt.Errorf("listening for the dashboard: %w", err)
		}
	}
	attrs := []any{"api", ln.Addr().String(), "tls", tlsCfg != nil, "store", storeKind(cfg.Store)}
	if mln != nil {
		attrs = append(attrs, "metrics", mln.Addr().String())
	}
	switch {
	case aln != nil:
		attrs = append(attrs, "dashboard", aln.Addr().String())
	case dash != nil:
		attrs = append(attrs, "dashboard", ln.Addr().String()+" /admin/")
	}
	log.Info("controller listening", attrs...)
	if started != nil {
		started(srv, st)
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveAPI(ctx, ln, api, tlsCfg, log) })
	if aln != nil {
		g.Go(func() error { return serveAPI(ctx, aln, dashboard.Mount(http.NotFoundHandler(), dash), tlsCfg, log) })
	}
	if mln != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		g.Go(func() error { return httpserve.Serve(ctx, mln, mux) })
	}
	g.Go(func() error { return srv.Run(ctx) })
	err = g.Wait()
	log.Info("controller stopped", "err", err)
	return err
}

// serveAPI serves the API until ctx ends. Its write timeout allows a long poll; at shutdown, requests get
// httpserve.ShutdownTimeout to finish and held long polls are then cut (gateways retry another replica).
func serveAPI(ctx context.Context, ln net.Listener, h http.Handler, tlsCfg *tls.Config, log *slog.Logger) error {
	hs := &http.Server{
		Handler: h, TLSConfig: tlsCfg,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second, WriteTimeout: maxWait + 15*time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			errc <- hs.ServeTLS(ln, "", "")
			return
		}
		errc <- hs.Serve(ln)
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serving the API: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpserve.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close() // long polls still held
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving the API: %w", err)
	}
	return nil
}

func storeKind(s string) string {
	if strings.HasPrefix(s, "bolt:") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "redis"
	}
	return u.Scheme + "://" + u.Host + u.Path
}

// openStore opens the embedded store or connects to Redis with the password from $CIVICWIFI_REDIS_PASSWORD or
// redis_password_file.
func openStore(ctx context.Context, cfg server.FileConfig, loc *time.Location, log *slog.Logger) (store.Store, error) {
	if p, ok := strings.CutPrefix(cfg.Store, "bolt:"); ok {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, fmt.Errorf("opening the store: %w", err)
		}
		st, err := boltstore.Open(p, boltstore.Options{Log: log.With("component", "boltstore"), Location: loc})
		if err != nil {
			return nil, fmt.Errorf("opening the store: %w", err)
		}
		return st, nil
	}
	u, err := redisURL(cfg)
	if err != nil {
		return nil, fmt.Errorf("opening the store: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := redisstore.Open(cctx, u, redisstore.Options{Location: loc})
	if err != nil {
		return nil, fmt.Errorf("opening the store: %w", err)
	}
	return st, nil
}

// redisURL is the store's redis:// address with the password from $CIVICWIFI_REDIS_PASSWORD or
// redis_password_file.
func redisURL(cfg server.FileConfig) (string, error) {
	u, err := url.Parse(cfg.Store)
	if err != nil {
		return "", errors.New("bad redis address")
	}
	pw, ok := os.LookupEnv(server.EnvRedisPassword)
	if !ok && cfg.RedisPasswordFile != "" {
		b, err := os.ReadFile(cfg.RedisPasswordFile)
		if err != nil {
			return "", fmt.Errorf("reading the redis password: %w", err)
		}
		pw = strings.TrimSpace(string(b))
	}
	if pw != "" {
		u.User = url.UserPassword("", pw)
	}
	return u.String(), nil
}

// openBus connects the replicas' wake-up channel when the store is Redis; nil for the embedded store.
func openBus(cfg server.FileConfig, log *slog.Logger) (*server.RedisBus, func(), error) {
	if strings.HasPrefix(cfg.Store, "bolt:") {
		return nil, func() {}, nil
	}
	u, err := redisURL(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting the replicas: %w", err)
	}
	o, err := redis.ParseURL(u)
	if err != nil {
		return nil, nil, errors.New("connecting the replicas: bad redis address")
	}
	rdb := redis.NewClient(o)
	return server.NewRedisBus(rdb, "cw:commands", log.With("component", "bus")), func() { rdb.Close() }, nil
}

// readTokens reads AP enrollment tokens, one per line (# comments and blank lines skipped), from files that
// only their owner may read.
func readTokens(files []string) ([]string, error) {
	var out []string
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, fmt.Errorf("reading AP enrollment tokens: %w", err)
		}
		st, err := fh.Stat()
		if err == nil && st.Mode().Perm()&0o077 != 0 {
			err = fmt.Errorf("%s: mode %04o: %w", f, st.Mode().Perm(), apiclient.ErrKeyFileMode)
		}
		sc := bufio.NewScanner(fh)
		for err == nil && sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line != "" && !strings.HasPrefix(line, "#") {
				out = append(out, line)
			}
		}
		if err == nil {
			err = sc.Err()
		}
		fh.Close()
		if err != nil {
			return nil, fmt.Errorf("reading AP enrollment tokens: %w", err)
		}
	}
	return out, nil
}
