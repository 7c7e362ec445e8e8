package plane

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// TokenFile is the API token's file name inside the data directory.
const TokenFile = "api-token"

// TokenPath is the token file's path for a data directory.
func TokenPath(dataDir string) string { return filepath.Join(dataDir, TokenFile) }

// LoadOrCreateToken returns the API token kept in dataDir, creating a
// random 256-bit one (hex, mode 0600) on first start. created reports
// whether it was made now.
func LoadOrCreateToken(dataDir string) (token string, created bool, err error) {
	path := TokenPath(dataDir)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", false, fmt.Errorf("data directory %s: %w", dataDir, err)
	}
	b, err := os.ReadFile(path) //nolint:gosec // inside the operator's data dir
	switch {
	case err == nil:
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", false, fmt.Errorf("token file %s is empty; delete it to have a new token made", path)
		}
		return t, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", false, fmt.Errorf("token file %s: %w", path, err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", false, fmt.Errorf("token: %w", err)
	}
	t := hex.EncodeToString(raw)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600) //nolint:gosec // fixed name in the data dir
	if err != nil {
		return "", false, fmt.Errorf("token file %s: %w", path, err)
	}
	if _, err := f.WriteString(t + "\n"); err != nil {
		_ = f.Close()
		return "", false, fmt.Errorf("token file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return "", false, fmt.Errorf("token file %s: %w", path, err)
	}
	return t, true, f.Close()
}
