package captive

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// KeySize is the length of the portal's HMAC key.
const KeySize = 32

// LoadKey reads the portal's HMAC key from dir/portal-hmac.key, making it
// (random, mode 0600) the first time. It signs the URLs and form fields
// that carry the resident's state between steps, instead of cookies.
func LoadKey(dir string) ([]byte, error) {
	path := filepath.Join(dir, "portal-hmac.key")
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) != KeySize {
			return nil, fmt.Errorf("reading the portal key %s: %d bytes, want %d (delete it to make a new one)", path, len(b), KeySize)
		}
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading the portal key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	b = make([]byte, KeySize)
	rand.Read(b)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating the portal key: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing the portal key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("writing the portal key: %w", err)
	}
	return b, nil
}

// signer makes and checks short HMAC-SHA256 tags. The hashes and their
// scratch space are pooled: the redirect path signs every original URL and
// must not allocate for it.
type signer struct{ pool sync.Pool }

type macState struct {
	h       hash.Hash
	scratch [sha256.Size]byte
}

func newSigner(key []byte) *signer {
	k := append([]byte(nil), key...)
	return &signer{pool: sync.Pool{New: func() any { return &macState{h: hmac.New(sha256.New, k)} }}}
}

// Domains keep a tag made for one purpose from being valid for another.
const (
	domainURL  = 'u'
	domainCSRF = 'c'
)

const tagLen = 12 // bytes of the HMAC kept: 96 bits

// tag appends the tag of (domain, a, b) to dst; each part is length-prefixed.
func (s *signer) tag(dst []byte, domain byte, a, b []byte) []byte {
	st := s.pool.Get().(*macState)
	st.h.Reset()
	st.scratch[0] = domain
	binary.BigEndian.PutUint32(st.scratch[1:5], uint32(len(a)))
	binary.BigEndian.PutUint32(st.scratch[5:9], uint32(len(b)))
	st.h.Write(st.scratch[:9])
	st.h.Write(a)
	st.h.Write(b)
	out := st.h.Sum(st.scratch[:0])
	dst = append(dst, out[:tagLen]...)
	s.pool.Put(st)
	return dst
}

var b64 = base64.RawURLEncoding

// appendURLSig appends the signature of a redirect target, as URL-safe
// text, to dst.
func (s *signer) appendURLSig(dst, target []byte) []byte {
	n := len(dst)
	dst = s.tag(dst, domainURL, target, nil)
	var raw [tagLen]byte
	copy(raw[:], dst[n:])
	return b64.AppendEncode(dst[:n], raw[:])
}

func (s *signer) urlSig(target string) string { return string(s.appendURLSig(nil, []byte(target))) }

func (s *signer) validURL(target, sig string) bool {
	return target != "" && hmac.Equal([]byte(s.urlSig(target)), []byte(sig))
}

// CSRF tokens bind a form to the client's address and a time: the token is
// base64(unix seconds, 8 bytes || tag(ip, seconds)).
const csrfMaxAge = 2 * time.Hour

func (s *signer) csrf(ip netip.Addr, now time.Time) string {
	var b [8 + tagLen]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.Unix()))
	ipb, _ := ip.MarshalBinary()
	s.tag(b[:8], domainCSRF, ipb, b[:8:8])
	return b64.EncodeToString(b[:])
}

// errCSRF explains a refused token (for the log; the resident sees a page).
var errCSRF = errors.New("form token")

func (s *signer) checkCSRF(token string, ip netip.Addr, now time.Time) error {
	b, err := b64.DecodeString(token)
	if err != nil || len(b) != 8+tagLen {
		return fmt.Errorf("%w: missing or malformed", errCSRF)
	}
	ipb, _ := ip.MarshalBinary()
	want := s.tag(nil, domainCSRF, ipb, b[:8])
	if !hmac.Equal(want, b[8:]) {
		return fmt.Errorf("%w: not made for this client", errCSRF)
	}
	at := time.Unix(int64(binary.BigEndian.Uint64(b[:8])), 0)
	if now.Sub(at) > csrfMaxAge || at.Sub(now) > time.Minute {
		return fmt.Errorf("%w: expired", errCSRF)
	}
	return nil
}
