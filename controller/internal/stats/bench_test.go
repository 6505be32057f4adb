package stats_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/civicwifi/civicwifi/controller/internal/stats"
	"github.com/civicwifi/civicwifi/controller/internal/store"
	"github.com/civicwifi/civicwifi/controller/internal/store/boltstore"
	"github.com/civicwifi/civicwifi/controller/internal/store/redisstore"
	"github.com/civicwifi/civicwifi/internal/redistest"
)

// A year of a town: 20 sites, 100,000 sessions (each reported by one stop
// event that carries its start, bytes and time), 5,000 users, in 2026 (Rome).
const (
	benchSites    = 20
	benchSessions = 100_000
	benchUsers    = 5_000
)

var (
	benchOnce  sync.Once
	benchStore *boltstore.Store
	benchErr   error
)

// yearStore seeds (once per process) a bbolt store on tmpfs through
// RecordEvent, as gateways would.
func yearStore(b *testing.B) *boltstore.Store {
	benchOnce.Do(func() {
		dir, err := os.MkdirTemp("/dev/shm", "cwstats-bench-")
		if err != nil {
			dir, err = os.MkdirTemp("", "cwstats-bench-")
		}
		if err != nil {
			benchErr = err
			return
		}
		st, err := boltstore.Open(filepath.Join(dir, "store.db"), boltstore.Options{Location: rome})
		if err != nil {
			benchErr = err
			return
		}
		benchStore = st
		t0 := time.Now()
		if benchErr = seedYear(st, 1); benchErr != nil {
			return
		}
		fmt.Fprintf(os.Stderr, "seeded %d sessions at %d sites in %v\n", benchSessions, benchSites, time.Since(t0).Round(time.Second))
		// the file goes with the process: remove it now, the open store keeps it readable
		os.RemoveAll(dir)
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchStore
}

// seedYear records the year's sessions into st from workers goroutines.
func seedYear(st store.Store, workers int) error {
	r := rand.New(rand.NewPCG(2026, 20))
	lo := time.Date(2026, 1, 1, 0, 0, 0, 0, rome)
	span := int64(time.Date(2027, 1, 1, 0, 0, 0, 0, rome).Sub(lo))
	methods := []string{"click-through", "sms", "spid", "voucher"}
	evs := make(chan store.SessionEvent, 256)
	errc := make(chan error, workers)
	for range workers {
		go func() {
			var first error
			for ev := range evs {
				if _, err := st.RecordEvent(context.Background(), ev); err != nil && first == nil {
					first = err
				}
			}
			errc <- first
		}()
	}
	for i := range benchSessions {
		start := lo.Add(time.Duration(r.Int64N(span)))
		evs <- store.SessionEvent{
			ID: fmt.Sprintf("e%d", i), Kind: store.EventStop, SessionID: fmt.Sprintf("s%d", i), GatewayID: "gw",
			SiteID: fmt.Sprintf("site-%02d", r.IntN(benchSites)), ClientMAC: fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff),
			UserID: fmt.Sprintf("u%d", r.IntN(benchUsers)), Method: methods[r.IntN(len(methods))],
			Start: start, At: start.Add(time.Duration(5+r.IntN(115)) * time.Minute),
			BytesDown: uint64(r.IntN(500 << 20)), BytesUp: uint64(r.IntN(50 << 20)), Reason: "idle",
		}
	}
	close(evs)
	var first error
	for range workers {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func benchSiteList() []stats.Site {
	var out []stats.Site
	for i := range benchSites {
		out = append(out, stats.Site{ID: fmt.Sprintf("site-%02d", i), Name: fmt.Sprintf("Parco n. %d, Voghera", i), Kind: "park"})
	}
	return out
}

// BenchmarkMonthlyExport is `controller report -month 2026-10` over the
// year: the town's report (20 sites) written as CSV.
func BenchmarkMonthlyExport(b *testing.B) {
	e := stats.New(yearStore(b), rome)
	ss := benchSiteList()
	ctx := context.Background()
	for b.Loop() {
		rep, err := e.TownReport(ctx, "Comune di Voghera", ss, "2026-10")
		if err != nil {
			b.Fatal(err)
		}
		if rep.Total.Sessions < benchSessions/13 {
			b.Fatalf("October has %d sessions", rep.Total.Sessions)
		}
		if err := rep.WriteCSV(io.Discard, stats.CSVOptions{BOM: true}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMonthlyExportRedis is the same export from a real redis-server
// (seeded through RecordEvent by 8 goroutines before the timer starts).
func BenchmarkMonthlyExportRedis(b *testing.B) {
	srv := redistest.Start(b)
	st, err := redisstore.Open(context.Background(), srv.URL(), redisstore.Options{Location: rome})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	t0 := time.Now()
	if err := seedYear(st, 8); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d sessions at %d sites in %v", benchSessions, benchSites, time.Since(t0).Round(time.Second))
	e := stats.New(st, rome)
	ss := benchSiteList()
	ctx := context.Background()
	for b.Loop() {
		rep, err := e.TownReport(ctx, "Comune di Voghera", ss, "2026-10")
		if err != nil {
			b.Fatal(err)
		}
		if err := rep.WriteCSV(io.Discard, stats.CSVOptions{BOM: true}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSiteMonthlyExport is one site's report, per day.
func BenchmarkSiteMonthlyExport(b *testing.B) {
	e := stats.New(yearStore(b), rome)
	s := benchSiteList()[3]
	ctx := context.Background()
	for b.Loop() {
		rep, err := e.SiteReport(ctx, "Comune di Voghera", s, "2026-10")
		if err != nil {
			b.Fatal(err)
		}
		if err := rep.WriteCSV(io.Discard, stats.CSVOptions{BOM: true}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkYearSeries are the dashboard's yearly charts for the town.
func BenchmarkYearSeries(b *testing.B) {
	e := stats.New(yearStore(b), rome)
	var ids []string
	for _, s := range benchSiteList() {
		ids = append(ids, s.ID)
	}
	from, to := time.Date(2026, 1, 1, 0, 0, 0, 0, rome), time.Date(2027, 1, 1, 0, 0, 0, 0, rome)
	ctx := context.Background()
	for _, step := range []stats.Step{stats.Month, stats.Day} {
		b.Run(string(step), func(b *testing.B) {
			for b.Loop() {
				if _, err := e.Series(ctx, ids, from, to, step); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("hour-month", func(b *testing.B) {
		for b.Loop() {
			if _, err := e.Series(ctx, ids, time.Date(2026, 10, 1, 0, 0, 0, 0, rome), time.Date(2026, 11, 1, 0, 0, 0, 0, rome), stats.Hour); err != nil {
				b.Fatal(err)
			}
		}
	})
}
