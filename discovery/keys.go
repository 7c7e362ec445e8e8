package discovery

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// ParseKey decodes one base64 gossip key and checks its length (16, 24 or
// 32 bytes: AES-128, -192 or -256 in GCM mode).
func ParseKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("gossip key is not base64: %w", err)
	}
	switch len(k) {
	case 16, 24, 32:
		return k, nil
	}
	return nil, fmt.Errorf("gossip key is %d bytes; want 16, 24 or 32", len(k))
}

// LoadKeyFile reads a keyring file: base64 keys, one per line, blank lines
// and '#' comments ignored. The first key is the one used to encrypt; the
// others are accepted for decryption (rotation: install the new key
// everywhere, then make it first everywhere, then remove the old one).
func LoadKeyFile(path string) ([][]byte, error) {
	data, err := os.ReadFile(path) //nolint:gosec // the operator names the file
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		k, err := ParseKey(t)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no gossip key", path)
	}
	return keys, nil
}

// KeyOp is a keyring change, applied on one member. Rotation across the
// pool is three rounds, each applied on every member before the next:
// install the new key, use it (encrypt with it), remove the old one.
type KeyOp string

// Keyring operations.
const (
	KeyInstall KeyOp = "install" // accept the key for decryption
	KeyUse     KeyOp = "use"     // encrypt with the key (it must be installed)
	KeyRemove  KeyOp = "remove"  // stop accepting the key (never the one in use)
)

// ErrNoKeyring is returned when gossip runs without encryption: a keyring
// cannot be turned on at run time, because members without one could no
// longer talk to this one.
var ErrNoKeyring = errors.New("gossip runs without encryption; start with a key to rotate keys")

// RotateKey applies op with key on this member's keyring.
func (a *Agent) RotateKey(op KeyOp, key []byte) error {
	kr := a.keyring
	if kr == nil {
		return ErrNoKeyring
	}
	switch op {
	case KeyInstall:
		return kr.AddKey(key)
	case KeyUse:
		return kr.UseKey(key)
	case KeyRemove:
		return kr.RemoveKey(key)
	}
	return fmt.Errorf("unknown key operation %q: want install, use or remove", op)
}

// KeyFingerprints lists the installed keys by fingerprint (the first 8
// bytes of their SHA-256, hex), the one in use first. Keys themselves are
// never shown.
func (a *Agent) KeyFingerprints() []string {
	if a.keyring == nil {
		return nil
	}
	var out []string
	for _, k := range a.keyring.GetKeys() { // primary first
		out = append(out, Fingerprint(k))
	}
	return out
}

// Fingerprint identifies a key without revealing it.
func Fingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}
