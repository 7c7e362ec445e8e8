package discovery

import (
	"bufio"
	"bytes"
	"encoding/base64"
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
