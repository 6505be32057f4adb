package gateway

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"time"
)

// A session record on disk is binary (recordV1): with 10,000 sessions the
// JSON records (about 400 bytes each) made a store of several megabytes,
// which the daemon maps and reads (its RSS, under 40 MB, counts those
// pages) and rewrites as counters move. The binary record is about a
// quarter of that. Records written as JSON by earlier versions still read.
const recordV1 = 1

func encode(s *Session) ([]byte, error) {
	if len(s.MAC) != 6 {
		return nil, fmt.Errorf("MAC %q is not an Ethernet address", s.MAC)
	}
	ip, err := s.IP.MarshalBinary()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, 128)
	b = append(b, recordV1)
	b = appendString(b, s.ID)
	b = append(b, s.MAC...)
	b = appendString(b, string(ip))
	b = appendString(b, s.Method)
	b = appendString(b, s.User)
	b = appendTime(b, s.Started)
	b = appendTime(b, s.Expires)
	b = binary.AppendVarint(b, int64(s.IdleTimeout))
	for _, v := range []uint64{s.QuotaBytes, s.DownRate, s.UpRate, s.BytesDown, s.BytesUp, s.Packets} {
		b = binary.AppendUvarint(b, v)
	}
	b = appendTime(b, s.LastActive)
	b = appendTime(b, s.Ended)
	b = appendString(b, s.EndReason)
	return b, nil
}

func decode(b []byte) (*Session, error) {
	if len(b) > 0 && b[0] == '{' {
		return decodeJSON(b)
	}
	if len(b) == 0 || b[0] != recordV1 {
		return nil, errors.New("unknown session record format")
	}
	r := reader{b: b[1:]}
	s := &Session{}
	s.ID = r.string()
	s.MAC = net.HardwareAddr(r.bytes(6))
	ip := r.string()
	s.Method = r.string()
	s.User = r.string()
	s.Started = r.time()
	s.Expires = r.time()
	s.IdleTimeout = time.Duration(r.varint())
	for _, p := range []*uint64{&s.QuotaBytes, &s.DownRate, &s.UpRate, &s.BytesDown, &s.BytesUp, &s.Packets} {
		*p = r.uvarint()
	}
	s.LastActive = r.time()
	s.Ended = r.time()
	s.EndReason = r.string()
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("session record: %d bytes left over", len(r.b))
	}
	if err := s.IP.UnmarshalBinary([]byte(ip)); err != nil {
		return nil, fmt.Errorf("session record: address: %w", err)
	}
	return s, nil
}

func decodeJSON(b []byte) (*Session, error) {
	var sj sessionJSON
	if err := json.Unmarshal(b, &sj); err != nil {
		return nil, err
	}
	mac, err := net.ParseMAC(sj.MACText)
	if err != nil {
		return nil, err
	}
	s := sj.Session
	s.MAC = mac
	return &s, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendTime writes a time as Unix nanoseconds; 0 is the zero time.
func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(b, 0)
	}
	return binary.AppendVarint(b, t.UnixNano())
}

// reader decodes a record; the first error sticks and later reads give
// zero values.
type reader struct {
	b   []byte
	err error
}

var errShort = errors.New("session record: truncated")

func (r *reader) uvarint() uint64 { return next(r, binary.Uvarint) }
func (r *reader) varint() int64   { return next(r, binary.Varint) }

// next decodes one number with decode (binary.Uvarint or Varint).
func next[T uint64 | int64](r *reader, decode func([]byte) (T, int)) T {
	if r.err != nil {
		return 0
	}
	v, n := decode(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = errShort
		return nil
	}
	out := append([]byte(nil), r.b[:n]...)
	r.b = r.b[n:]
	return out
}

func (r *reader) string() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		if r.err == nil {
			r.err = errShort
		}
		return ""
	}
	return string(r.bytes(int(n)))
}

func (r *reader) time() time.Time {
	v := r.varint()
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(0, v).UTC()
}
