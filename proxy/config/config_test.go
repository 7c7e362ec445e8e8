package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// valid returns a configuration that passes Validate.
func valid() Config {
	c := Default()
	c.Service = "orders"
	c.NodeID = "orders-1"
	c.Upstreams = map[string]Upstream{
		"inventory": {Endpoints: []string{"10.0.0.1:15006", "10.0.0.2:15006"}},
		"payments":  {Endpoints: []string{"[::1]:15006"}, LoadBalancer: LBRoundRobin},
	}
	c.TCPOutbound = []TCPRoute{{Listen: "127.0.0.1:5432", Service: "postgres"}, {Listen: "127.0.0.1:6379", Service: "redis"}}
	return c
}

// errorPaths returns the FieldError paths in err, in order.
func errorPaths(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("got %T %v, want config.Errors", err, err)
	}
	paths := make([]string, 0, len(errs))
	for _, e := range errs {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("got %T %v in Errors, want *FieldError", e, e)
		}
		if !strings.HasPrefix(e.Error(), fe.Path+": ") || fe.Msg == "" {
			t.Errorf("FieldError.Error() = %q, want %q followed by a message", e.Error(), fe.Path+": ")
		}
		paths = append(paths, fe.Path)
	}
	return paths
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string // FieldError paths, in order; nil means valid
	}{
		{"valid", func(*Config) {}, nil},
		{"defaults plus service", func(c *Config) { *c = Default(); c.Service = "a" }, nil},
		{"service missing", func(c *Config) { c.Service = "" }, []string{"service"}},
		{"service upper case", func(c *Config) { c.Service = "Orders" }, []string{"service"}},
		{"service with underscore", func(c *Config) { c.Service = "my_svc" }, []string{"service"}},
		{"service leading dash", func(c *Config) { c.Service = "-a" }, []string{"service"}},
		{"service 63 chars", func(c *Config) { c.Service = strings.Repeat("a", 63) }, nil},
		{"service 64 chars", func(c *Config) { c.Service = strings.Repeat("a", 64) }, []string{"service"}},
		{"nodeID with space", func(c *Config) { c.NodeID = "a b" }, []string{"nodeID"}},
		{"nodeID with slash", func(c *Config) { c.NodeID = "a/b" }, []string{"nodeID"}},
		{"nodeID too long", func(c *Config) { c.NodeID = strings.Repeat("n", 129) }, []string{"nodeID"}},
		{"app missing", func(c *Config) { c.App = "" }, []string{"app"}},
		{"app without port", func(c *Config) { c.App = "127.0.0.1" }, []string{"app"}},
		{"app port out of range", func(c *Config) { c.App = "127.0.0.1:65536" }, []string{"app"}},
		{"app port not a number", func(c *Config) { c.App = "127.0.0.1:http" }, []string{"app"}},
		{"app IPv6", func(c *Config) { c.App = "[::1]:8080" }, nil},
		{"appProtocol unknown", func(c *Config) { c.AppProtocol = "quic" }, []string{"appProtocol"}},
		{"appProtocol empty", func(c *Config) { c.AppProtocol = "" }, []string{"appProtocol"}},
		{"appProtocol grpc", func(c *Config) { c.AppProtocol = ProtocolGRPC }, nil},
		{"listeners.inbound invalid", func(c *Config) { c.Listeners.Inbound = "nowhere" }, []string{"listeners.inbound"}},
		{"listeners.outbound missing", func(c *Config) { c.Listeners.Outbound = "" }, []string{"listeners.outbound"}},
		{"listeners.admin negative port", func(c *Config) { c.Listeners.Admin = "127.0.0.1:-1" }, []string{"listeners.admin"}},
		{"listeners.health host with space", func(c *Config) { c.Listeners.Health = "a b:1" }, []string{"listeners.health"}},
		{"listener port 0", func(c *Config) { c.Listeners.Inbound = "127.0.0.1:0" }, nil},
		{"loadBalancer unknown", func(c *Config) { c.LoadBalancer = "random" }, []string{"loadBalancer"}},
		{"upstream name invalid", func(c *Config) { c.Upstreams["Bad_Name"] = Upstream{Endpoints: []string{"h:1"}} }, []string{"upstreams.Bad_Name"}},
		{"upstream without endpoints", func(c *Config) { c.Upstreams["inventory"] = Upstream{} }, []string{"upstreams.inventory.endpoints"}},
		{"upstream endpoint invalid", func(c *Config) {
			c.Upstreams["inventory"] = Upstream{Endpoints: []string{"h:1", "h", "h:2"}}
		}, []string{"upstreams.inventory.endpoints[1]"}},
		{"upstream endpoint empty", func(c *Config) {
			c.Upstreams["inventory"] = Upstream{Endpoints: []string{""}}
		}, []string{"upstreams.inventory.endpoints[0]"}},
		{"upstream endpoint duplicate", func(c *Config) {
			c.Upstreams["inventory"] = Upstream{Endpoints: []string{"h:1", "h:2", "h:1"}}
		}, []string{"upstreams.inventory.endpoints[2]"}},
		{"upstream loadBalancer unknown", func(c *Config) {
			c.Upstreams["payments"] = Upstream{Endpoints: []string{"h:1"}, LoadBalancer: "least-conn"}
		}, []string{"upstreams.payments.loadBalancer"}},
		{"upstream maxRequestBodyBytes negative", func(c *Config) {
			c.Upstreams["payments"] = Upstream{Endpoints: []string{"h:1"}, MaxRequestBodyBytes: -1}
		}, []string{"upstreams.payments.maxRequestBodyBytes"}},
		{"tcpOutbound listen invalid", func(c *Config) { c.TCPOutbound[0].Listen = "5432" }, []string{"tcpOutbound[0].listen"}},
		{"tcpOutbound listen missing", func(c *Config) { c.TCPOutbound[1].Listen = "" }, []string{"tcpOutbound[1].listen"}},
		{"tcpOutbound service invalid", func(c *Config) { c.TCPOutbound[1].Service = "Redis" }, []string{"tcpOutbound[1].service"}},
		{"tcpOutbound service missing", func(c *Config) { c.TCPOutbound[0].Service = "" }, []string{"tcpOutbound[0].service"}},
		{"limits.maxHeaderBytes too small", func(c *Config) { c.Limits.MaxHeaderBytes = 4095 }, []string{"limits.maxHeaderBytes"}},
		{"limits.maxHeaderBytes smallest", func(c *Config) { c.Limits.MaxHeaderBytes = 4096 }, nil},
		{"limits.maxHeaderBytes largest", func(c *Config) { c.Limits.MaxHeaderBytes = 1 << 20 }, nil},
		{"limits.maxHeaderBytes too large", func(c *Config) { c.Limits.MaxHeaderBytes = 1<<20 + 1 }, []string{"limits.maxHeaderBytes"}},
		{"limits.maxHeaderCount too small", func(c *Config) { c.Limits.MaxHeaderCount = 7 }, []string{"limits.maxHeaderCount"}},
		{"limits.maxHeaderCount bounds", func(c *Config) { c.Limits.MaxHeaderCount = 8 }, nil},
		{"limits.maxHeaderCount too large", func(c *Config) { c.Limits.MaxHeaderCount = 1001 }, []string{"limits.maxHeaderCount"}},
		{"limits.readHeaderTimeout zero", func(c *Config) { c.Limits.ReadHeaderTimeout.Duration = 0 }, []string{"limits.readHeaderTimeout"}},
		{"limits.idleTimeout negative", func(c *Config) { c.Limits.IdleTimeout.Duration = -time.Second }, []string{"limits.idleTimeout"}},
		{"limits.maxConcurrentStreams zero", func(c *Config) { c.Limits.MaxConcurrentStreams = 0 }, []string{"limits.maxConcurrentStreams"}},
		{"limits.maxConcurrentStreams too large", func(c *Config) { c.Limits.MaxConcurrentStreams = 10001 }, []string{"limits.maxConcurrentStreams"}},
		{"limits.maxConnections zero", func(c *Config) { c.Limits.MaxConnections = 0 }, []string{"limits.maxConnections"}},
		{"limits.appMaxIdleConns negative", func(c *Config) { c.Limits.AppMaxIdleConns = -1 }, []string{"limits.appMaxIdleConns"}},
		{"limits.appMaxConns negative", func(c *Config) { c.Limits.AppMaxConns = -1 }, []string{"limits.appMaxConns"}},
		{"limits.appMaxConns zero means no cap", func(c *Config) { c.Limits.AppMaxConns = 0 }, nil},
		{"limits.connectTimeout zero", func(c *Config) { c.Limits.ConnectTimeout.Duration = 0 }, []string{"limits.connectTimeout"}},
		{"limits.maxRequestBodyBytes negative", func(c *Config) { c.Limits.MaxRequestBodyBytes = -1 }, []string{"limits.maxRequestBodyBytes"}},
		{"limits.maxRequestBodyBytes zero means no cap", func(c *Config) { c.Limits.MaxRequestBodyBytes = 0 }, nil},
		{"limits.bodyIdleTimeout zero", func(c *Config) { c.Limits.BodyIdleTimeout.Duration = 0 }, []string{"limits.bodyIdleTimeout"}},
		{"limits.minBodyRate negative", func(c *Config) { c.Limits.MinBodyRate = -1 }, []string{"limits.minBodyRate"}},
		{"limits.minBodyRate too large", func(c *Config) { c.Limits.MinBodyRate = 1<<30 + 1 }, []string{"limits.minBodyRate"}},
		{"limits.minBodyRate zero turns it off", func(c *Config) { c.Limits.MinBodyRate = 0; c.Limits.MinBodyRateWindow.Duration = 0 }, nil},
		{"limits.minBodyRateWindow zero", func(c *Config) { c.Limits.MinBodyRateWindow.Duration = 0 }, []string{"limits.minBodyRateWindow"}},
		{"drain.period negative", func(c *Config) { c.Drain.Period.Duration = -1 }, []string{"drain.period"}},
		{"drain.period zero", func(c *Config) { c.Drain.Period.Duration = 0 }, nil},
		{"drain.timeout zero", func(c *Config) { c.Drain.Timeout.Duration = 0 }, []string{"drain.timeout"}},
		{"log.level unknown", func(c *Config) { c.Log.Level = "verbose" }, []string{"log.level"}},
		{"log.level upper case", func(c *Config) { c.Log.Level = "INFO" }, []string{"log.level"}},
		{"log.format unknown", func(c *Config) { c.Log.Format = "xml" }, []string{"log.format"}},
		{"several at once", func(c *Config) {
			c.Service = ""
			c.Listeners.Inbound = "x"
			c.Upstreams["inventory"] = Upstream{Endpoints: []string{"bad"}}
			c.TCPOutbound[1].Listen = "bad"
			c.Limits.MaxHeaderCount = 0
			c.Drain.Timeout.Duration = 0
			c.Log.Level = ""
		}, []string{"service", "listeners.inbound", "upstreams.inventory.endpoints[0]", "tcpOutbound[1].listen",
			"limits.maxHeaderCount", "drain.timeout", "log.level"}},
		{"upstreams reported in name order", func(c *Config) {
			c.Upstreams["zeta"] = Upstream{}
			c.Upstreams["alpha"] = Upstream{}
		}, []string{"upstreams.alpha.endpoints", "upstreams.zeta.endpoints"}},
		{"one endpoint, two problems", func(c *Config) {
			c.Upstreams["inventory"] = Upstream{Endpoints: []string{"", ""}}
		}, []string{"upstreams.inventory.endpoints[0]", "upstreams.inventory.endpoints[1]", "upstreams.inventory.endpoints[1]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mutate(&c)
			err := c.Validate()
			got := errorPaths(t, err)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Validate() paths: got %q, want %q (error: %v)", got, tt.want, err)
			}
		})
	}
}

func TestValidateErrorsMessage(t *testing.T) {
	c := valid()
	c.Service = ""
	c.Log.Format = "xml"
	err := c.Validate()
	if err == nil {
		t.Fatal("got nil, want two errors")
	}
	msg := err.Error()
	for _, want := range []string{"service: required", "log.format: \"xml\"", "; "} {
		if !strings.Contains(msg, want) {
			t.Errorf("Error() = %q, want it to contain %q", msg, want)
		}
	}
}

func TestCheckHostPort(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"127.0.0.1:80", true},
		{"localhost:0", true},
		{":8080", true},
		{"[::1]:443", true},
		{"h:65535", true},
		{"h:65536", false},
		{"h:-1", false},
		{"h", false},
		{"h:", false},
		{"h:x", false},
		{"a b:1", false},
		{"a/b:1", false},
		{"::1:80", false},
		{"", false},
	}
	for _, tt := range tests {
		err := CheckHostPort(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("CheckHostPort(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
	}
}

func TestEnvName(t *testing.T) {
	for flag, want := range map[string]string{
		"service": "MESH_SERVICE", "app-protocol": "MESH_APP_PROTOCOL", "outbound-tcp": "MESH_OUTBOUND_TCP", "config": "MESH_CONFIG",
	} {
		if got := EnvName(flag); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", flag, got, want)
		}
	}
}

// --- Decoding -------------------------------------------------------------

func TestDecodeGoodFile(t *testing.T) {
	c, err := LoadFile(filepath.Join("testdata", "good.yaml"))
	if err != nil {
		t.Fatalf("LoadFile: %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: got %v, want nil", err)
	}
	want := Config{
		Service: "orders", NodeID: "orders-1", App: "127.0.0.1:8080", AppProtocol: ProtocolHTTP1,
		Listeners:    Listeners{Inbound: "0.0.0.0:15006", Outbound: "127.0.0.1:15001", Admin: "127.0.0.1:15000", Health: "0.0.0.0:15020"},
		LoadBalancer: LBRoundRobin,
		Upstreams: map[string]Upstream{
			"inventory": {Endpoints: []string{"10.0.0.1:15006", "10.0.0.2:15006"}},
			"payments":  {Endpoints: []string{"10.0.1.1:15006"}, LoadBalancer: LBPeakEWMA, MaxRequestBodyBytes: 16 << 20},
		},
		TCPOutbound: []TCPRoute{{Listen: "127.0.0.1:5432", Service: "postgres"}},
		Limits: Limits{
			MaxHeaderBytes: 32768, MaxHeaderCount: 50,
			ReadHeaderTimeout: Duration{5 * time.Second}, IdleTimeout: Duration{90 * time.Second},
			MaxConcurrentStreams: 200, MaxConnections: 1000, AppMaxIdleConns: 64, AppMaxConns: 512,
			ConnectTimeout:      Duration{2 * time.Second},
			MaxRequestBodyBytes: 4 << 20, BodyIdleTimeout: Duration{20 * time.Second},
			MinBodyRate: 2048, MinBodyRateWindow: Duration{5 * time.Second},
		},
		Drain:  Drain{Period: Duration{3 * time.Second}, Timeout: Duration{20 * time.Second}},
		Log:    Log{Level: "debug", Format: "json"},
		Gossip: Default().Gossip, // the file leaves gossip and weight at their defaults
		Weight: 1,
	}
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("decoded:\n got %+v\nwant %+v", *c, want)
	}
}

func TestDecodeKeepsDefaults(t *testing.T) {
	c := Default()
	if err := Decode([]byte("service: a\nlimits:\n  maxHeaderCount: 50\n"), &c); err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Service = "a"
	want.Limits.MaxHeaderCount = 50
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v, want defaults with service and maxHeaderCount set: %+v", c, want)
	}
}

func TestDecodeStrict(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // substrings of the error; nil means no error
	}{
		{"unknown top-level key", "service: a\nretries: 3\n", []string{"unknown field", "retries"}},
		{"unknown nested key", "limits:\n  maxHeaderByte: 1\n", []string{"unknown field", "maxHeaderByte"}},
		{"unknown key in an upstream", "upstreams:\n  a:\n    endpoints: [h:1]\n    weight: 2\n", []string{"unknown field", "weight"}},
		{"unknown key in a tcp route", "tcpOutbound:\n- listen: h:1\n  service: a\n  port: 1\n", []string{"unknown field", "port"}},
		{"duplicate top-level key", "service: a\nservice: b\n", []string{"service", "already set"}},
		{"duplicate nested key", "limits:\n  maxHeaderCount: 1\n  maxHeaderCount: 2\n", []string{"maxHeaderCount", "already set"}},
		{"duplicate upstream", "upstreams:\n  a:\n    endpoints: [h:1]\n  a:\n    endpoints: [h:2]\n", []string{"\"a\"", "already set"}},
		{"duplicate key in JSON", `{"service": "a", "service": "b"}`, []string{"service", "already set"}},
		{"string for int", "limits:\n  maxHeaderCount: many\n", []string{"maxHeaderCount"}},
		{"list for string", "service: [a]\n", []string{"service"}},
		{"list for map", "upstreams: [a]\n", []string{"upstreams"}},
		{"negative for uint", "limits:\n  maxConcurrentStreams: -1\n", []string{"maxConcurrentStreams"}},
		{"duration as number", "drain:\n  period: 10\n", []string{"duration"}},
		{"duration word", "drain:\n  period: ten\n", []string{"invalid duration", "ten"}},
		{"duration missing unit", "limits:\n  idleTimeout: \"10\"\n", []string{"invalid duration"}},
		{"not YAML", "service: [a\n", []string{"yaml"}},
		{"duration 10s", "drain:\n  period: 10s\n", nil},
		{"duration 250ms", "limits:\n  connectTimeout: 250ms\n", nil},
		{"duration 1h2m", "limits:\n  idleTimeout: 1h2m\n", nil},
		{"JSON", `{"service": "a", "drain": {"period": "1s"}}`, nil},
		{"empty document", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			err := Decode([]byte(tt.yaml), &c)
			if tt.want == nil {
				if err != nil {
					t.Errorf("got %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got nil, want an error containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestDecodeDurations(t *testing.T) {
	c := Default()
	if err := Decode([]byte("drain:\n  period: 10s\n  timeout: 1m30s\nlimits:\n  connectTimeout: 250ms\n"), &c); err != nil {
		t.Fatal(err)
	}
	if got, want := c.Drain.Period.Duration, 10*time.Second; got != want {
		t.Errorf("drain.period: got %v, want %v", got, want)
	}
	if got, want := c.Drain.Timeout.Duration, 90*time.Second; got != want {
		t.Errorf("drain.timeout: got %v, want %v", got, want)
	}
	if got, want := c.Limits.ConnectTimeout.Duration, 250*time.Millisecond; got != want {
		t.Errorf("limits.connectTimeout: got %v, want %v", got, want)
	}
	b, err := Duration{1500 * time.Millisecond}.MarshalJSON()
	if err != nil || string(b) != `"1.5s"` {
		t.Errorf("MarshalJSON: got %s, %v; want \"1.5s\"", b, err)
	}
}

// TestDecodeKeyCase: keys are matched exactly. A key differing only in
// case is unknown, and must not silently override the real one.
func TestDecodeKeyCase(t *testing.T) {
	tests := []struct {
		yaml string
		want []string // substrings of the error
	}{
		{"SERVICE: a\n", []string{"SERVICE", "unknown field", `did you mean "service"`}},
		{"service: a\nService: b\n", []string{"Service", "unknown field", `did you mean "service"`}},
		{"limits:\n  MaxHeaderCount: 50\n", []string{"MaxHeaderCount", "unknown field", `did you mean "maxHeaderCount"`}},
	}
	for _, tt := range tests {
		c := Default()
		err := Decode([]byte(tt.yaml), &c)
		if err == nil {
			t.Errorf("Decode(%q): got nil error (service=%q, maxHeaderCount=%d), want an unknown-field error",
				tt.yaml, c.Service, c.Limits.MaxHeaderCount)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Decode(%q): got %q, want it to contain %q", tt.yaml, err, w)
			}
		}
	}
}

// TestDecodeOneDocument: a configuration file holds one YAML document; a
// second would otherwise be ignored silently.
func TestDecodeOneDocument(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       string // substring of the error; "" means no error
	}{
		{"leading separator", "---\nservice: a\n", ""},
		{"second document", "service: a\n---\nservice: b\n", "more than one YAML document"},
		{"second document after a leading separator", "---\nservice: a\n---\nlimits:\n  maxHeaderCount: 5\n", "more than one YAML document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			err := Decode([]byte(tt.yaml), &c)
			if tt.want == "" {
				if err != nil {
					t.Errorf("got %v, want nil", err)
				} else if c.Service != "a" {
					t.Errorf("service: got %q, want %q", c.Service, "a")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v (service=%q, maxHeaderCount=%d), want an error containing %q",
					err, c.Service, c.Limits.MaxHeaderCount, tt.want)
			}
		})
	}
}

func TestLoadFileErrors(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"unknown_top.yaml", []string{"unknown_top.yaml", "retries"}},
		{"unknown_nested.yaml", []string{"unknown_nested.yaml", "maxHeaderByte"}},
		{"duplicate.yaml", []string{"duplicate.yaml", "app", "already set"}},
		{"wrong_type.yaml", []string{"wrong_type.yaml", "maxHeaderCount"}},
		{"bad_duration.yaml", []string{"bad_duration.yaml", "ten"}},
		{"does_not_exist.yaml", []string{"does_not_exist.yaml"}},
	}
	for _, tt := range tests {
		_, err := LoadFile(filepath.Join("testdata", tt.file))
		if err == nil {
			t.Errorf("LoadFile(%s): got nil, want an error", tt.file)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("LoadFile(%s): got %q, want it to contain %q", tt.file, err, w)
			}
		}
	}
}

func TestInvalidFileReportsEveryPath(t *testing.T) {
	c, err := LoadFile(filepath.Join("testdata", "invalid.yaml"))
	if err != nil {
		t.Fatalf("LoadFile: %v", err)
	}
	got := errorPaths(t, c.Validate())
	want := []string{"service", "appProtocol", "listeners.inbound", "upstreams.inventory.endpoints[1]",
		"upstreams.inventory.loadBalancer", "limits.maxHeaderCount", "drain.timeout", "log.level"}
	if !slices.Equal(got, want) {
		t.Errorf("paths: got %q, want %q", got, want)
	}
}

// --- Load: defaults < file < MESH_* env < flags --------------------------

// fakeEnv is a lookupEnv over a map; the real environment is never read.
func fakeEnv(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func load(t *testing.T, args []string, env map[string]string) (*Loaded, error) {
	t.Helper()
	return Load(args, fakeEnv(env), io.Discard)
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadPrecedenceScalars(t *testing.T) {
	type field struct {
		flag  string
		yaml  func(v string) string
		get   func(*Config) string
		def   string
		vals  [3]string // file, env, flag values: all different from def
		isSvc bool
	}
	dur := func(d time.Duration) string { return d.String() }
	fields := []field{
		{flag: "service", yaml: func(v string) string { return "service: " + v + "\n" }, get: func(c *Config) string { return c.Service },
			def: "", vals: [3]string{"filesvc", "envsvc", "flagsvc"}, isSvc: true},
		{flag: "node-id", yaml: func(v string) string { return "nodeID: " + v + "\n" }, get: func(c *Config) string { return c.NodeID },
			def: "base-", vals: [3]string{"node-f", "node-e", "node-g"}},
		{flag: "app", yaml: func(v string) string { return "app: " + v + "\n" }, get: func(c *Config) string { return c.App },
			def: "127.0.0.1:8080", vals: [3]string{"10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3"}},
		{flag: "app-protocol", yaml: func(v string) string { return "appProtocol: " + v + "\n" }, get: func(c *Config) string { return string(c.AppProtocol) },
			def: "http1", vals: [3]string{"h2c", "grpc", "tcp"}},
		{flag: "inbound", yaml: func(v string) string { return "listeners:\n  inbound: " + v + "\n" }, get: func(c *Config) string { return c.Listeners.Inbound },
			def: "0.0.0.0:15006", vals: [3]string{"h:1", "h:2", "h:3"}},
		{flag: "outbound", yaml: func(v string) string { return "listeners:\n  outbound: " + v + "\n" }, get: func(c *Config) string { return c.Listeners.Outbound },
			def: "127.0.0.1:15001", vals: [3]string{"h:1", "h:2", "h:3"}},
		{flag: "admin", yaml: func(v string) string { return "listeners:\n  admin: " + v + "\n" }, get: func(c *Config) string { return c.Listeners.Admin },
			def: "127.0.0.1:15000", vals: [3]string{"h:1", "h:2", "h:3"}},
		{flag: "health", yaml: func(v string) string { return "listeners:\n  health: " + v + "\n" }, get: func(c *Config) string { return c.Listeners.Health },
			def: "0.0.0.0:15020", vals: [3]string{"h:1", "h:2", "h:3"}},
		{flag: "lb", yaml: func(v string) string { return "loadBalancer: " + v + "\n" }, get: func(c *Config) string { return string(c.LoadBalancer) },
			def: "p2c-peak-ewma", vals: [3]string{"round-robin", "p2c-peak-ewma", "round-robin"}},
		{flag: "drain-period", yaml: func(v string) string { return "drain:\n  period: " + v + "\n" }, get: func(c *Config) string { return dur(c.Drain.Period.Duration) },
			def: "5s", vals: [3]string{"7s", "8s", "9s"}},
		{flag: "drain-timeout", yaml: func(v string) string { return "drain:\n  timeout: " + v + "\n" }, get: func(c *Config) string { return dur(c.Drain.Timeout.Duration) },
			def: "25s", vals: [3]string{"1m0s", "2m0s", "3m0s"}},
		{flag: "log-level", yaml: func(v string) string { return "log:\n  level: " + v + "\n" }, get: func(c *Config) string { return c.Log.Level },
			def: "info", vals: [3]string{"warn", "error", "debug"}},
		{flag: "log-format", yaml: func(v string) string { return "log:\n  format: " + v + "\n" }, get: func(c *Config) string { return c.Log.Format },
			def: "text", vals: [3]string{"json", "text", "json"}},
	}
	for _, f := range fields {
		for mask := 0; mask < 8; mask++ {
			file, env, flag := mask&1 != 0, mask&2 != 0, mask&4 != 0
			name := f.flag + "/"
			for i, on := range []bool{file, env, flag} {
				if on {
					name += []string{"file+", "env+", "flag+"}[i]
				}
			}
			t.Run(strings.TrimSuffix(name, "+"), func(t *testing.T) {
				content := ""
				if !f.isSvc {
					content = "service: base\n"
				}
				if file {
					content += f.yaml(f.vals[0])
				}
				args := []string{"--config", writeFile(t, content)}
				envm := map[string]string{}
				if env {
					envm[EnvName(f.flag)] = f.vals[1]
				}
				if flag {
					args = append(args, "--"+f.flag+"="+f.vals[2])
				}
				want := f.def
				switch {
				case flag:
					want = f.vals[2]
				case env:
					want = f.vals[1]
				case file:
					want = f.vals[0]
				}
				l, err := load(t, args, envm)
				if f.isSvc && want == "" {
					if got := errorPaths(t, err); !slices.Equal(got, []string{"service"}) {
						t.Errorf("no service anywhere: got %v, want an error for path service", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				got := f.get(l.Config)
				if f.flag == "node-id" && want == f.def {
					if !strings.HasPrefix(got, f.def) { // default: SERVICE-HOSTNAME
						t.Errorf("node-id: got %q, want the default base-HOSTNAME", got)
					}
					return
				}
				if got != want {
					t.Errorf("%s: got %q, want %q", f.flag, got, want)
				}
			})
		}
	}
}

func TestLoadPrecedenceUpstreams(t *testing.T) {
	file := filepath.Join("testdata", "precedence.yaml")
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want map[string]Upstream
	}{
		{"file only", nil, nil, map[string]Upstream{
			"a": {Endpoints: []string{"f:1", "f:2"}, LoadBalancer: LBRoundRobin},
			"c": {Endpoints: []string{"f:3"}},
		}},
		{"env replaces named services only", nil, map[string]string{"MESH_UPSTREAM": "a=e:1,e:2;b=e:3"}, map[string]Upstream{
			"a": {Endpoints: []string{"e:1", "e:2"}, LoadBalancer: LBRoundRobin},
			"b": {Endpoints: []string{"e:3"}},
			"c": {Endpoints: []string{"f:3"}},
		}},
		{"env separated by whitespace", nil, map[string]string{"MESH_UPSTREAM": "a=e:1 b=e:3\tb=e:4\n"}, map[string]Upstream{
			"a": {Endpoints: []string{"e:1"}, LoadBalancer: LBRoundRobin},
			"b": {Endpoints: []string{"e:3", "e:4"}},
			"c": {Endpoints: []string{"f:3"}},
		}},
		{"flag once replaces that name only", []string{"--upstream", "a=g:1"}, nil, map[string]Upstream{
			"a": {Endpoints: []string{"g:1"}, LoadBalancer: LBRoundRobin},
			"c": {Endpoints: []string{"f:3"}},
		}},
		{"flag repeated for a name accumulates", []string{"--upstream", "a=g:1", "--upstream=a=g:2,g:3"}, nil, map[string]Upstream{
			"a": {Endpoints: []string{"g:1", "g:2", "g:3"}, LoadBalancer: LBRoundRobin},
			"c": {Endpoints: []string{"f:3"}},
		}},
		{"flag adds a new name", []string{"--upstream", "d=g:4"}, nil, map[string]Upstream{
			"a": {Endpoints: []string{"f:1", "f:2"}, LoadBalancer: LBRoundRobin},
			"c": {Endpoints: []string{"f:3"}},
			"d": {Endpoints: []string{"g:4"}},
		}},
		{"flag wins over env entirely", []string{"--upstream", "c=g:9"}, map[string]string{"MESH_UPSTREAM": "a=e:1;b=e:3"}, map[string]Upstream{
			"a": {Endpoints: []string{"f:1", "f:2"}, LoadBalancer: LBRoundRobin},
			"c": {Endpoints: []string{"g:9"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := load(t, append([]string{"--config", file}, tt.args...), tt.env)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := l.Config.Upstreams; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("upstreams:\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestLoadOutboundTCP(t *testing.T) {
	l, err := load(t, []string{"--service", "a"}, map[string]string{"MESH_OUTBOUND_TCP": "127.0.0.1:7000=db;127.0.0.1:7001=cache"})
	if err != nil {
		t.Fatal(err)
	}
	want := []TCPRoute{{Listen: "127.0.0.1:7000", Service: "db"}, {Listen: "127.0.0.1:7001", Service: "cache"}}
	if !reflect.DeepEqual(l.Config.TCPOutbound, want) {
		t.Errorf("from env: got %v, want %v", l.Config.TCPOutbound, want)
	}
	l, err = load(t, []string{"--service", "a", "--outbound-tcp", "127.0.0.1:7002=q"}, map[string]string{"MESH_OUTBOUND_TCP": "127.0.0.1:7000=db"})
	if err != nil {
		t.Fatal(err)
	}
	want = []TCPRoute{{Listen: "127.0.0.1:7002", Service: "q"}}
	if !reflect.DeepEqual(l.Config.TCPOutbound, want) {
		t.Errorf("flag over env: got %v, want %v", l.Config.TCPOutbound, want)
	}
}

func TestLoadConfigFileSelection(t *testing.T) {
	envFile := writeFile(t, "service: fromenvfile\n")
	flagFile := writeFile(t, "service: fromflagfile\n")
	l, err := load(t, nil, map[string]string{"MESH_CONFIG": envFile})
	if err != nil {
		t.Fatal(err)
	}
	if l.Config.Service != "fromenvfile" || l.File != envFile {
		t.Errorf("MESH_CONFIG: got service %q file %q, want fromenvfile %q", l.Config.Service, l.File, envFile)
	}
	l, err = load(t, []string{"--config", flagFile}, map[string]string{"MESH_CONFIG": envFile})
	if err != nil {
		t.Fatal(err)
	}
	if l.Config.Service != "fromflagfile" || l.File != flagFile {
		t.Errorf("--config over MESH_CONFIG: got service %q file %q, want fromflagfile %q", l.Config.Service, l.File, flagFile)
	}
	l, err = load(t, []string{"--service", "x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l.File != "" {
		t.Errorf("no file: got File %q, want empty", l.File)
	}
}

func TestLoadReloadRereadsFile(t *testing.T) {
	p := writeFile(t, "service: one\nlog:\n  level: warn\n")
	l, err := load(t, []string{"--config", p, "--log-level", "debug"}, map[string]string{"MESH_APP": "10.0.0.9:9"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("service: two\nlog:\n  level: error\napp: 1.1.1.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := l.Reload()
	if err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if c.Service != "two" || c.Log.Level != "debug" || c.App != "10.0.0.9:9" {
		t.Errorf("after reload: got service %q level %q app %q, want two (file), debug (flag), 10.0.0.9:9 (env)", c.Service, c.Log.Level, c.App)
	}
	if err := os.WriteFile(p, []byte("service: two\nbogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Reload(); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("reload of a bad file: got %v, want an error naming bogus", err)
	}
}

func TestLoadErrors(t *testing.T) {
	good := writeFile(t, "service: a\n")
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		want     string   // substring of the error
		envPaths []string // FieldError paths when the error is about env vars
	}{
		{"bad duration env", []string{"--config", good}, map[string]string{"MESH_DRAIN_PERIOD": "ten"}, "MESH_DRAIN_PERIOD", []string{"MESH_DRAIN_PERIOD"}},
		{"bad protocol env", []string{"--config", good}, map[string]string{"MESH_APP_PROTOCOL": "quic"}, "MESH_APP_PROTOCOL", []string{"MESH_APP_PROTOCOL"}},
		{"bad upstream env", []string{"--config", good}, map[string]string{"MESH_UPSTREAM": "a=h:1;B=h:2"}, "MESH_UPSTREAM", []string{"MESH_UPSTREAM"}},
		{"bad lb env", []string{"--config", good}, map[string]string{"MESH_LB": "random"}, "MESH_LB", []string{"MESH_LB"}},
		{"several bad env", []string{"--config", good}, map[string]string{"MESH_LB": "random", "MESH_APP_PROTOCOL": "quic"}, "MESH_", []string{"MESH_APP_PROTOCOL", "MESH_LB"}},
		{"bad env ignored when the flag is given", []string{"--config", good, "--lb", "round-robin"}, map[string]string{"MESH_LB": "random"}, "", nil},
		{"unknown flag", []string{"--service", "a", "--bogus", "1"}, nil, "bogus", nil},
		{"bad flag value", []string{"--service", "a", "--drain-period", "ten"}, nil, "drain-period", nil},
		{"bad upstream flag", []string{"--service", "a", "--upstream", "a"}, nil, "NAME=HOST:PORT", nil},
		{"positional argument", []string{"--service", "a", "extra"}, nil, "unexpected argument", nil},
		{"missing file", []string{"--config", filepath.Join(t.TempDir(), "nope.yaml")}, nil, "nope.yaml", nil},
		{"missing MESH_CONFIG file", nil, map[string]string{"MESH_CONFIG": filepath.Join(t.TempDir(), "gone.yaml")}, "gone.yaml", nil},
		{"unknown key in file", []string{"--config", filepath.Join("testdata", "unknown_nested.yaml")}, nil, "maxHeaderByte", nil},
		{"invalid after merge", []string{"--config", good, "--app", "nohost"}, nil, "app:", nil},
		{"no service", nil, nil, "service", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, tt.args, tt.env)
			if tt.want == "" {
				if err != nil {
					t.Errorf("got %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if tt.envPaths != nil {
				got := errorPaths(t, err)
				slices.Sort(got)
				if !slices.Equal(got, tt.envPaths) {
					t.Errorf("paths: got %q, want %q", got, tt.envPaths)
				}
			}
		})
	}
}

func TestLoadHelp(t *testing.T) {
	var out strings.Builder
	_, err := Load([]string{"--help"}, fakeEnv(nil), &out)
	if !errors.Is(err, ErrHelp) {
		t.Fatalf("got %v, want ErrHelp", err)
	}
	for _, want := range []string{"--service", "--upstream", "--config"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage does not mention %s:\n%s", want, out.String())
		}
	}
}

func TestLoadNodeIDDefault(t *testing.T) {
	l, err := load(t, []string{"--service", "orders"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if want := "orders-" + host; l.Config.NodeID != want {
		t.Errorf("nodeID: got %q, want %q", l.Config.NodeID, want)
	}
}

func TestParseUpstream(t *testing.T) {
	tests := []struct {
		in      string
		name    string
		eps     []string
		wantErr string
	}{
		{in: "a=h:1", name: "a", eps: []string{"h:1"}},
		{in: "a=h:1,h:2", name: "a", eps: []string{"h:1", "h:2"}},
		{in: "orders-v2=10.0.0.1:15006,[::1]:15006", name: "orders-v2", eps: []string{"10.0.0.1:15006", "[::1]:15006"}},
		{in: "a=h:1,h:1", name: "a", eps: []string{"h:1", "h:1"}}, // duplicates are Validate's concern
		{in: "a", wantErr: "NAME=HOST:PORT"},
		{in: "a=", wantErr: "NAME=HOST:PORT"},
		{in: "=h:1", wantErr: "NAME=HOST:PORT"},
		{in: "", wantErr: "NAME=HOST:PORT"},
		{in: "A=h:1", wantErr: "not a valid service name"},
		{in: "a_b=h:1", wantErr: "not a valid service name"},
		{in: " a=h:1", wantErr: "not a valid service name"},
		{in: "a=h", wantErr: "HOST:PORT"},
		{in: "a=h:1,", wantErr: "HOST:PORT"},
		{in: "a=h:1,,h:2", wantErr: "HOST:PORT"},
		{in: "a=h:99999", wantErr: "0-65535"},
		{in: "a=h:1=x", wantErr: "port"},
		{in: "a= h:1", wantErr: "host"},
		{in: "a=h:1;b=h:2", wantErr: "HOST:PORT"},
	}
	for _, tt := range tests {
		name, eps, err := ParseUpstream(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseUpstream(%q): got %q %v %v, want an error containing %q", tt.in, name, eps, err, tt.wantErr)
			}
			continue
		}
		if err != nil || name != tt.name || !slices.Equal(eps, tt.eps) {
			t.Errorf("ParseUpstream(%q): got %q %q %v, want %q %q nil", tt.in, name, eps, err, tt.name, tt.eps)
		}
	}
}

func TestEffectiveLB(t *testing.T) {
	c := valid()
	if got := c.EffectiveLB("payments"); got != LBRoundRobin {
		t.Errorf("payments: got %q, want %q (its override)", got, LBRoundRobin)
	}
	if got := c.EffectiveLB("inventory"); got != LBPeakEWMA {
		t.Errorf("inventory: got %q, want %q (the default)", got, LBPeakEWMA)
	}
	if got := c.EffectiveLB("unknown"); got != LBPeakEWMA {
		t.Errorf("unknown: got %q, want %q", got, LBPeakEWMA)
	}
}

// TestExampleConfigIsValid keeps the documented example loadable.
func TestExampleConfigIsValid(t *testing.T) {
	c, err := LoadFile(filepath.Join("..", "..", "examples", "config", "sidecar.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("examples/config/sidecar.yaml: %v", err)
	}
	if !c.Gossip.Enabled() || len(c.Gossip.Join) != 1 || len(c.Upstreams) != 2 {
		t.Errorf("example decoded to gossip %+v, upstreams %v; want gossip on with one seed and two static upstreams", c.Gossip, c.Upstreams)
	}
}

// TestBodyLimitDefaults pins the documented body defaults: no cap (the
// mesh streams bodies of any size), 30 s idle, 1 KiB/s over 10 s windows.
func TestBodyLimitDefaults(t *testing.T) {
	l := Default().Limits
	if l.MaxRequestBodyBytes != 0 || l.BodyIdleTimeout.Duration != 30*time.Second ||
		l.MinBodyRate != 1024 || l.MinBodyRateWindow.Duration != 10*time.Second {
		t.Errorf("body defaults: got cap %d, idle %v, rate %d B/s over %v; want 0, 30s, 1024 B/s over 10s",
			l.MaxRequestBodyBytes, l.BodyIdleTimeout, l.MinBodyRate, l.MinBodyRateWindow)
	}
}

func TestMaxRequestBodyFor(t *testing.T) {
	c := valid()
	c.Limits.MaxRequestBodyBytes = 4 << 20
	c.Upstreams["payments"] = Upstream{Endpoints: []string{"h:1"}, MaxRequestBodyBytes: 64 << 20}
	for name, want := range map[string]int64{"payments": 64 << 20, "inventory": 4 << 20, "unknown": 4 << 20} {
		if got := c.MaxRequestBodyFor(name); got != want {
			t.Errorf("MaxRequestBodyFor(%q) = %d, want %d", name, got, want)
		}
	}
	c.Limits.MaxRequestBodyBytes = 0
	if got := c.MaxRequestBodyFor("inventory"); got != 0 {
		t.Errorf("MaxRequestBodyFor without any cap = %d, want 0 (none)", got)
	}
}
