package apiclient

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// cacheFile is the policy cache on disk: the policy with the controller's signature over the answer that
// carried it, so the cache is verified again when read (a truncated or edited file is not booted from).
type cacheFile struct {
	Gateway   string    `json:"gateway"`
	Version   string    `json:"version"`
	ETag      string    `json:"etag"`
	Nonce     string    `json:"nonce"`
	Signature string    `json:"signature"`
	FetchedAt time.Time `json:"fetched_at"`
	Body      []byte    `json:"body"` // base64: the exact bytes signed (a RawMessage would be re-compacted)
}

// writeCache replaces the cache file atomically (temporary file, fsync, rename, fsync of the directory).
func (c *Client) writeCache(p Policy, a answer) error {
	if c.cfg.CacheFile == "" {
		return nil
	}
	data, err := json.Marshal(cacheFile{
		Gateway: c.cfg.GatewayID, ETag: a.etag, Nonce: a.nonce, Signature: a.sig,
		FetchedAt: p.FetchedAt, Body: a.body,
	})
	if err != nil {
		return fmt.Errorf("encoding cache: %w", err)
	}
	dir := filepath.Dir(c.cfg.CacheFile)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("writing cache: %w", err)
	}
	f, err := os.CreateTemp(dir, ".policy-*.tmp")
	if err != nil {
		return fmt.Errorf("writing cache: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing cache: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing cache: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing cache: %w", err)
	}
	if err := os.Rename(f.Name(), c.cfg.CacheFile); err != nil {
		return fmt.Errorf("writing cache: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// CachedPolicy returns the policy last received from the controller, after checking the controller's signature
// on it. FromCache is set.
func (c *Client) CachedPolicy() (Policy, error) {
	if c.cfg.CacheFile == "" {
		return Policy{}, ErrNoCache
	}
	data, err := os.ReadFile(c.cfg.CacheFile)
	if os.IsNotExist(err) {
		return Policy{}, fmt.Errorf("%s: %w", c.cfg.CacheFile, ErrNoCache)
	}
	if err != nil {
		return Policy{}, fmt.Errorf("reading cached policy: %w", err)
	}
	var cf cacheFile
	if err := json.Unmarshal(data, &cf); err != nil {
		return Policy{}, fmt.Errorf("%s: %w: %w", c.cfg.CacheFile, ErrNoCache, err)
	}
	if cf.Gateway != c.cfg.GatewayID {
		return Policy{}, fmt.Errorf("%s: cached for gateway %q, not %q: %w", c.cfg.CacheFile, cf.Gateway, c.cfg.GatewayID, ErrNoCache)
	}
	a := answer{status: 200, etag: cf.ETag, body: cf.Body, nonce: cf.Nonce, sig: cf.Signature}
	if err := c.verify(a); err != nil {
		return Policy{}, fmt.Errorf("%s: %w: %w", c.cfg.CacheFile, ErrNoCache, err)
	}
	return Policy{Version: unquoteETag(cf.ETag), Body: cf.Body, FetchedAt: cf.FetchedAt, FromCache: true}, nil
}
