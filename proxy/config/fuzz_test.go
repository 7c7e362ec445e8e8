package config

import "testing"

// Any file either decodes (over the defaults) or is refused with an
// error; nothing panics.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"service: orders\napp: 127.0.0.1:8080\n",
		"service: orders\nupstreams:\n  inventory:\n    endpoints: [127.0.0.1:15006]\n    resilience:\n      retry: {maxAttempts: 2}\n",
		"service: orders\nfencing: {mode: on}\nmtls: {mode: strict, caPin: sha256:00}\n",
		"Service: orders\n",
		"service: [\n",
		"---\n---\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		cfg := Default()
		if err := Decode(data, &cfg); err != nil {
			return
		}
		_ = cfg.Validate()
	})
}
