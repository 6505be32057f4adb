package apiclient

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Header names of the protocol (README.md, "Signatures").
const (
	HeaderGateway   = "Civicwifi-Gateway"   // request: the gateway id the key belongs to
	HeaderTimestamp = "Civicwifi-Timestamp" // request: Unix seconds when signed
	HeaderNonce     = "Civicwifi-Nonce"     // request: 16 random bytes, base64url without padding
	HeaderSignature = "Civicwifi-Signature" // request and response: Ed25519 signature, base64url without padding
)

// Skew is how far a request's timestamp may be from the controller's clock, either way.
const Skew = 60 * time.Second

// NonceTTL is how long the controller must remember a nonce: a request older than Skew is refused anyway.
const NonceTTL = 2*Skew + 5*time.Second

// Signature domain labels: a request signature can never be taken for a response one or the reverse.
const (
	requestLabel  = "civicwifi-request-v1\n"
	responseLabel = "civicwifi-response-v1\n"
)

// ErrMalformed is returned for a field that cannot be signed (a newline in it, an empty id...).
var ErrMalformed = errors.New("malformed signature field")

// SignedRequest is what a request signature covers. Target is the request-target as sent (path and query,
// escaped as on the wire, e.g. r.RequestURI); BodySHA256 is the SHA-256 of the body exactly as sent (of
// nothing for a GET).
type SignedRequest struct {
	Gateway    string
	Method     string
	Target     string
	Timestamp  int64
	Nonce      string
	BodySHA256 [sha256.Size]byte
}

// AppendMessage appends the exact bytes the signature is computed over to b:
//
//	civicwifi-request-v1
//	gateway:<id>
//	method:<METHOD>
//	target:<path?query>
//	timestamp:<unix seconds>
//	nonce:<nonce>
//	body-sha256:<lower-case hex>
//
// every line ending in "\n". No field may contain a newline or be empty (except the target's query).
func (s SignedRequest) AppendMessage(b []byte) ([]byte, error) {
	for _, f := range [...]string{s.Gateway, s.Method, s.Target, s.Nonce} {
		if f == "" || !oneLine(f) {
			return nil, ErrMalformed
		}
	}
	b = append(b, requestLabel...)
	b = append(b, "gateway:"...)
	b = append(b, s.Gateway...)
	b = append(b, "\nmethod:"...)
	b = append(b, s.Method...)
	b = append(b, "\ntarget:"...)
	b = append(b, s.Target...)
	b = append(b, "\ntimestamp:"...)
	b = strconv.AppendInt(b, s.Timestamp, 10)
	b = append(b, "\nnonce:"...)
	b = append(b, s.Nonce...)
	b = append(b, "\nbody-sha256:"...)
	b = hex.AppendEncode(b, s.BodySHA256[:])
	return append(b, '\n'), nil
}

// SignedResponse is what a response signature covers. Nonce is the nonce of the request it answers, so a
// response cannot be replayed as the answer to another request; ETag is the response's ETag header ("" if none).
type SignedResponse struct {
	Gateway    string
	Nonce      string
	Status     int
	ETag       string
	BodySHA256 [sha256.Size]byte
}

// AppendMessage appends the bytes a response signature covers:
//
//	civicwifi-response-v1
//	gateway:<id>
//	nonce:<request nonce>
//	status:<code>
//	etag:<ETag header or empty>
//	body-sha256:<lower-case hex>
func (s SignedResponse) AppendMessage(b []byte) ([]byte, error) {
	if s.Gateway == "" || s.Nonce == "" || !oneLine(s.Gateway) || !oneLine(s.Nonce) || !oneLine(s.ETag) {
		return nil, ErrMalformed
	}
	b = append(b, responseLabel...)
	b = append(b, "gateway:"...)
	b = append(b, s.Gateway...)
	b = append(b, "\nnonce:"...)
	b = append(b, s.Nonce...)
	b = append(b, "\nstatus:"...)
	b = strconv.AppendInt(b, int64(s.Status), 10)
	b = append(b, "\netag:"...)
	b = append(b, s.ETag...)
	b = append(b, "\nbody-sha256:"...)
	b = hex.AppendEncode(b, s.BodySHA256[:])
	return append(b, '\n'), nil
}

func oneLine(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' || s[i] == '\r' {
			return false
		}
	}
	return true
}

// b64 is the encoding of nonces and signatures on the wire.
var b64 = base64.RawURLEncoding

// EncodeSignature and DecodeSignature convert signatures to and from their header form.
func EncodeSignature(sig []byte) string { return b64.EncodeToString(sig) }

// DecodeSignature decodes a signature header value.
func DecodeSignature(s string) ([]byte, error) { return b64.DecodeString(s) }

// NewNonce returns 16 random bytes, base64url.
func NewNonce() string {
	var b [16]byte
	rand.Read(b[:]) // never returns an error (crypto/rand, Go 1.24+)
	return b64.EncodeToString(b[:])
}

// ValidNonce reports whether s has the form NewNonce produces.
func ValidNonce(s string) bool {
	if len(s) != 22 {
		return false
	}
	var b [16]byte
	n, err := b64.Decode(b[:], []byte(s))
	return err == nil && n == 16
}

// ValidID reports whether id is a usable gateway or site id: 1 to 64 of [a-z0-9._-], starting with a letter or
// digit. Ids appear in logs and in signed messages, so nothing else is accepted.
func ValidID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// NewEventID returns a fresh random event id (128 bits, hex), unique across the fleet.
func NewEventID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ParseTimestamp parses a HeaderTimestamp value.
func ParseTimestamp(s string) (int64, error) {
	ts, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ts <= 0 {
		return 0, fmt.Errorf("timestamp %q: %w", s, ErrMalformed)
	}
	return ts, nil
}
