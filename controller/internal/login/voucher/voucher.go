// Package voucher is the voucher login: IT staff or a front desk create batches of codes (for one site or the
// whole town, each with a session duration, a data allowance, a number of devices and a validity), print them
// (Sheet), and residents redeem them on the portal. Codes use an alphabet without look-alikes (no 0/O, 1/l/I),
// are kept only as keyed hashes, and guessing is rate-limited per device and per site.
package voucher

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/civicwifi/civicwifi/controller/apiclient"
	"github.com/civicwifi/civicwifi/controller/internal/login/pepper"
	"github.com/civicwifi/civicwifi/controller/internal/store"
)

// Alphabet is the codes' alphabet: digits and upper-case letters without 0, 1, I, L and O.
const Alphabet = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"

// CodeLen is a code's length (about 49 bits), shown as two groups of five: "7KQ2M-XH9PD".
const CodeLen = 10

// MaxBatch is the most codes one batch may have.
const MaxBatch = 10000

// Spec is what a batch gives each of its vouchers.
type Spec struct {
	Site       string        `json:"site,omitempty"` // "" for every site of the town
	Duration   time.Duration `json:"duration"`       // from the first use
	DataBytes  uint64        `json:"data_bytes,omitempty"`
	Devices    int           `json:"devices"`     // devices per voucher
	ValidUntil time.Time     `json:"valid_until"` // a voucher never used by then is void
	Note       string        `json:"note,omitempty"`
}

// Batch is a created batch.
type Batch struct {
	ID      string    `json:"id"`
	Spec    Spec      `json:"spec"`
	Count   int       `json:"count"`
	Created time.Time `json:"created"`
	Actor   string    `json:"actor"`
}

// Limits bound guessing: tries per device, and wrong codes per site, in a fixed Window.
type Limits struct {
	Window       time.Duration
	PerMAC       int
	SiteFailures int
}

// DefaultLimits allow a resident a few typos and a site a busy desk, but not a brute force: at 30 wrong codes per
// 10 minutes per site, finding one of 10,000 live codes takes on the order of 10^7 years.
var DefaultLimits = Limits{Window: 10 * time.Minute, PerMAC: 10, SiteFailures: 30}

// Book creates and redeems vouchers.
type Book struct {
	Store  store.Store
	Pepper pepper.Pepper
	Limits Limits // zero: DefaultLimits
	Log    *slog.Logger
	Now    func() time.Time
}

func (b *Book) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

func (b *Book) limits() Limits {
	if b.Limits == (Limits{}) {
		return DefaultLimits
	}
	return b.Limits
}

// record is what the store keeps under the code's keyed hash.
type record struct {
	Batch string `json:"batch"`
	Spec  Spec   `json:"spec"`
}

// Validate reports what is wrong with spec.
func (s Spec) Validate(now time.Time) error {
	var errs []error
	if s.Duration < time.Minute || s.Duration > 366*24*time.Hour {
		errs = append(errs, fmt.Errorf("duration %s: want 1m to 366d", s.Duration))
	}
	if s.Devices < 1 || s.Devices > 10 {
		errs = append(errs, fmt.Errorf("devices %d: want 1 to 10", s.Devices))
	}
	if !s.ValidUntil.After(now) {
		errs = append(errs, fmt.Errorf("valid until %s: already past", s.ValidUntil.Format(time.RFC3339)))
	} else if s.ValidUntil.Sub(now) > 2*366*24*time.Hour {
		errs = append(errs, fmt.Errorf("valid until %s: more than two years ahead", s.ValidUntil.Format(time.RFC3339)))
	}
	if s.Site != "" && !apiclient.ValidID(s.Site) {
		errs = append(errs, fmt.Errorf("site %q: not a site id", s.Site))
	}
	return errors.Join(errs...)
}

// Create makes count vouchers with spec and returns the batch and the codes (formatted for printing). The codes
// exist only in the answer: the store keeps their keyed hashes. The batch is recorded in the audit log.
func (b *Book) Create(ctx context.Context, spec Spec, count int, actor string) (Batch, []string, error) {
	now := b.now()
	if count < 1 || count > MaxBatch {
		return Batch{}, nil, fmt.Errorf("creating vouchers: count %d: want 1 to %d", count, MaxBatch)
	}
	if err := spec.Validate(now); err != nil {
		return Batch{}, nil, fmt.Errorf("creating vouchers: %w", err)
	}
	batch := Batch{ID: apiclient.NewEventID()[:12], Spec: spec, Count: count, Created: now.UTC(), Actor: actor}
	ttl := spec.ValidUntil.Sub(now) + spec.Duration
	val, _ := json.Marshal(record{Batch: batch.ID, Spec: spec})
	codes := make([]string, 0, count)
	for len(codes) < count {
		code, err := NewCode()
		if err != nil {
			return Batch{}, nil, err
		}
		fresh, err := b.Store.PutIfAbsent(ctx, "voucher/"+b.Pepper.Key("voucher", code), val, ttl)
		if err != nil {
			return Batch{}, nil, fmt.Errorf("storing voucher: %w", err)
		}
		if fresh { // a collision (2^-49 per pair) is simply drawn again
			codes = append(codes, Format(code))
		}
	}
	bval, _ := json.Marshal(batch)
	if err := b.Store.Put(ctx, "voucher-batch/"+batch.ID, bval, ttl); err != nil {
		return Batch{}, nil, fmt.Errorf("storing voucher batch: %w", err)
	}
	where := spec.Site
	if where == "" {
		where = "town"
	}
	if err := b.Store.AppendAudit(ctx, store.AuditEntry{At: now, Actor: actor, Action: "voucher.create", Target: where,
		Detail: fmt.Sprintf("batch %s: %d vouchers, %s, %d devices, %d bytes, valid until %s", batch.ID, count, spec.Duration,
			spec.Devices, spec.DataBytes, spec.ValidUntil.Format(time.RFC3339))}); err != nil {
		return Batch{}, nil, fmt.Errorf("recording voucher batch: %w", err)
	}
	return batch, codes, nil
}

// NewCode returns CodeLen random characters of Alphabet (unformatted).
func NewCode() (string, error) {
	b := make([]byte, CodeLen)
	max := big.NewInt(int64(len(Alphabet)))
	for i := range b {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			return "", fmt.Errorf("making a voucher code: %w", err)
		}
		b[i] = Alphabet[n.Int64()]
	}
	return string(b), nil
}

// Format writes a code as two groups: "7KQ2M-XH9PD".
func Format(code string) string { return code[:CodeLen/2] + "-" + code[CodeLen/2:] }

// Normalize reads a code as typed (any case, spaces and dashes) and reports whether it can be one.
func Normalize(s string) (string, bool) {
	if len(s) > 40 {
		return "", false
	}
	b := make([]byte, 0, CodeLen)
	for _, r := range strings.ToUpper(s) {
		switch {
		case r == ' ' || r == '-' || r == '\t':
		case r < 128 && strings.IndexByte(Alphabet, byte(r)) >= 0:
			b = append(b, byte(r))
		default:
			return "", false
		}
	}
	return string(b), len(b) == CodeLen
}

// Redeemed is a voucher accepted for one device.
type Redeemed struct {
	Batch     string
	User      string        // pseudonym of the voucher (its devices share it)
	Remaining time.Duration // of the voucher's duration, from its first use
	DataBytes uint64
}

// Redeem accepts code for the device mac at site: the voucher must be this site's or town-wide, not void, and
// either already used by mac or with a device left. Errors for the resident are *apiclient.LoginError
// (bad_voucher, voucher_used, rate_limited).
func (b *Book) Redeem(ctx context.Context, site, mac, typed string) (Redeemed, error) {
	now, lim := b.now(), b.limits()
	macKey := b.Pepper.Key("mac", mac)
	limited := &apiclient.LoginError{Code: apiclient.CodeRateLimited, Message: "too many voucher tries", RetryAfterSeconds: int(lim.Window / time.Second)}
	if lim.PerMAC > 0 {
		n, err := b.Store.Incr(ctx, "voucher/try/"+macKey, 1, lim.Window)
		if err != nil {
			return Redeemed{}, fmt.Errorf("counting voucher tries: %w", err)
		}
		if n > int64(lim.PerMAC) {
			return Redeemed{}, limited
		}
	}
	failKey := "voucher/fail/" + site
	if lim.SiteFailures > 0 {
		n, err := b.Store.Incr(ctx, failKey, 0, lim.Window)
		if err != nil {
			return Redeemed{}, fmt.Errorf("counting voucher failures: %w", err)
		}
		if n >= int64(lim.SiteFailures) {
			return Redeemed{}, limited
		}
	}
	fail := func(code, msg string) error {
		if lim.SiteFailures > 0 {
			if n, err := b.Store.Incr(ctx, failKey, 1, lim.Window); err == nil && n == int64(lim.SiteFailures) {
				b.log().Warn("voucher guessing limit reached: vouchers refused at this site for a while", "site", site, "window", lim.Window)
			}
		}
		return &apiclient.LoginError{Code: code, Message: msg}
	}
	code, ok := Normalize(typed)
	if !ok {
		return Redeemed{}, fail(apiclient.CodeBadVoucher, "not a voucher code")
	}
	h := b.Pepper.Key("voucher", code)
	val, err := b.Store.Get(ctx, "voucher/"+h)
	if errors.Is(err, store.ErrNotFound) {
		return Redeemed{}, fail(apiclient.CodeBadVoucher, "no such voucher")
	}
	if err != nil {
		return Redeemed{}, fmt.Errorf("reading voucher: %w", err)
	}
	var rec record
	if err := json.Unmarshal(val, &rec); err != nil {
		return Redeemed{}, fmt.Errorf("decoding voucher: %w", err)
	}
	if rec.Spec.Site != "" && rec.Spec.Site != site {
		return Redeemed{}, fail(apiclient.CodeBadVoucher, "a voucher of another site")
	}
	if !now.Before(rec.Spec.ValidUntil) { // only a voucher already in use lives on past its validity
		if _, err := b.Store.Get(ctx, "voucher-first/"+h); errors.Is(err, store.ErrNotFound) {
			return Redeemed{}, fail(apiclient.CodeBadVoucher, "voucher no longer valid")
		} else if err != nil {
			return Redeemed{}, fmt.Errorf("reading voucher use: %w", err)
		}
	}
	ttl := rec.Spec.ValidUntil.Sub(now) + rec.Spec.Duration
	if ttl <= 0 {
		return Redeemed{}, fail(apiclient.CodeVoucherUsed, "voucher time used up")
	}
	// The first use starts the voucher's time.
	if _, err := b.Store.PutIfAbsent(ctx, "voucher-first/"+h, []byte(strconv.FormatInt(now.UnixMilli(), 10)), ttl); err != nil {
		return Redeemed{}, fmt.Errorf("recording voucher use: %w", err)
	}
	fv, err := b.Store.Get(ctx, "voucher-first/"+h)
	if err != nil {
		return Redeemed{}, fmt.Errorf("reading voucher use: %w", err)
	}
	ms, _ := strconv.ParseInt(string(fv), 10, 64)
	first := time.UnixMilli(ms)
	remaining := first.Add(rec.Spec.Duration).Sub(now).Round(time.Second)
	if remaining <= 0 {
		return Redeemed{}, fail(apiclient.CodeVoucherUsed, "voucher time used up")
	}
	fresh, err := b.Store.PutIfAbsent(ctx, "voucher-dev/"+h+"/"+macKey, []byte("1"), ttl)
	if err != nil {
		return Redeemed{}, fmt.Errorf("recording voucher device: %w", err)
	}
	if fresh {
		n, err := b.Store.Incr(ctx, "voucher-devs/"+h, 1, ttl)
		if err != nil {
			return Redeemed{}, fmt.Errorf("counting voucher devices: %w", err)
		}
		if n > int64(rec.Spec.Devices) {
			_ = b.Store.Delete(ctx, "voucher-dev/"+h+"/"+macKey)
			return Redeemed{}, fail(apiclient.CodeVoucherUsed, "voucher used by its devices already")
		}
	}
	return Redeemed{Batch: rec.Batch, User: b.Pepper.Pseudonym("voucher:" + code), Remaining: remaining, DataBytes: rec.Spec.DataBytes}, nil
}

func (b *Book) log() *slog.Logger {
	if b.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return b.Log
}
