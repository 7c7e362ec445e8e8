package fencing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// EpochFileName is the file under the control plane's data directory that
// holds the fencing epochs.
const EpochFileName = "fencing-epochs.json"

// epochFileVersion is the format version of the epoch file.
const epochFileVersion = 1

// epochFile is the durable record of every domain's newest epoch:
//
//	{"version": 1, "domains": {"mesh": 4, "service/orders": 7}}
//
// It is a file of its own rather than a bucket in the policy store so
// that the epoch, which must never go backwards, is written and fsynced
// before a verdict carrying it leaves the control plane, independently of
// policy transactions. Writes are atomic: a temporary file in the same
// directory is written and fsynced, renamed over the old one, and the
// directory is fsynced, so a crash leaves either the old or the new file.
type epochFile struct {
	path string
}

type epochFileContent struct {
	Version int               `json:"version"`
	Domains map[string]uint64 `json:"domains"`
}

// load reads the epochs; a missing file is an empty record. A file that
// cannot be read is an error: silently restarting epochs would let stale
// writes through.
func (f epochFile) load() (map[string]uint64, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]uint64{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fencing epochs: %w", err)
	}
	var c epochFileContent
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("fencing epochs: %s: %w", f.path, err)
	}
	if c.Version != epochFileVersion {
		return nil, fmt.Errorf("fencing epochs: %s: format version %d, want %d", f.path, c.Version, epochFileVersion)
	}
	for d := range c.Domains {
		if !validDomainName(d) {
			return nil, fmt.Errorf("fencing epochs: %s: %q is not a fencing domain name", f.path, d)
		}
	}
	if c.Domains == nil {
		c.Domains = map[string]uint64{}
	}
	return c.Domains, nil
}

// store replaces the record atomically and durably.
func (f epochFile) store(domains map[string]uint64) (err error) {
	b, err := json.Marshal(epochFileContent{Version: epochFileVersion, Domains: domains})
	if err != nil {
		return fmt.Errorf("fencing epochs: %w", err)
	}
	dir := filepath.Dir(f.path)
	tmp, err := os.CreateTemp(dir, "."+EpochFileName+".*")
	if err != nil {
		return fmt.Errorf("fencing epochs: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(append(b, '\n')); err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fencing epochs: write %s: %w", tmp.Name(), err)
	}
	if err = os.Chmod(tmp.Name(), 0o600); err != nil {
		return fmt.Errorf("fencing epochs: %w", err)
	}
	if err = os.Rename(tmp.Name(), f.path); err != nil {
		return fmt.Errorf("fencing epochs: %w", err)
	}
	d, err := os.Open(dir) // #nosec G304 -- the control plane's own data directory
	if err != nil {
		return fmt.Errorf("fencing epochs: %w", err)
	}
	defer func() { _ = d.Close() }()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("fencing epochs: sync %s: %w", dir, err)
	}
	return nil
}
