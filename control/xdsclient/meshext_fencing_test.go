package xdsclient

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDecodeFencingPolicy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		json    string
		mesh    FencingPolicy
		orders  FencingPolicy
		wantErr string
	}{
		{name: "absent", json: `{}`},
		{name: "empty entries", json: `{"fencing": {}, "services": {"orders": {"fencing": {}}}}`},
		{
			name: "every key",
			json: `{"fencing": {"mode": "on"}, "services": {"orders": {"fencing": {"mode": "on", "expectedSize": 3,
				"grpcWriteMethods": ["/shop.v1.Orders/Create", "/shop.v1.Payments/*"]}}}}`,
			mesh:   FencingPolicy{Mode: FencingOn},
			orders: FencingPolicy{Mode: FencingOn, ExpectedSize: 3, GRPCWriteMethods: []string{"/shop.v1.Orders/Create", "/shop.v1.Payments/*"}},
		},
		{name: "off", json: `{"fencing": {"mode": "off"}}`, mesh: FencingPolicy{Mode: FencingOff}},
		{name: "empty method list", json: `{"fencing": {"mode": "on", "grpcWriteMethods": []}}`, mesh: FencingPolicy{Mode: FencingOn}},
		{
			name:    "unknown mode",
			json:    `{"fencing": {"mode": "maybe"}}`,
			wantErr: `fencing: mode: want "on" or "off", got "maybe"`,
		},
		{
			name:    "empty mode",
			json:    `{"services": {"orders": {"fencing": {"mode": ""}}}}`,
			wantErr: `services.orders.fencing: mode: want "on" or "off", got ""`,
		},
		{
			name:    "boolean mode",
			json:    `{"fencing": {"mode": true}}`,
			wantErr: `fencing: mode: cannot use JSON bool as string`,
		},
		{
			name:    "settings without a mode",
			json:    `{"fencing": {"expectedSize": 3}}`,
			wantErr: `fencing: mode: required when expectedSize or grpcWriteMethods is set`,
		},
		{
			name:    "zero expected size",
			json:    `{"services": {"orders": {"fencing": {"mode": "on", "expectedSize": 0}}}}`,
			wantErr: `services.orders.fencing: expectedSize: must be ≥ 1, got 0`,
		},
		{
			name:    "negative expected size",
			json:    `{"fencing": {"mode": "on", "expectedSize": -2}}`,
			wantErr: `fencing: expectedSize: must be ≥ 1, got -2`,
		},
		{
			name:    "fractional expected size",
			json:    `{"fencing": {"mode": "on", "expectedSize": 2.5}}`,
			wantErr: `fencing: expectedSize: cannot use JSON number 2.5 as int`,
		},
		{
			name:    "method without a service",
			json:    `{"fencing": {"mode": "on", "grpcWriteMethods": ["/shop.v1.Orders/Create", "Create"]}}`,
			wantErr: `fencing: grpcWriteMethods[1]: "Create" is not /package.Service/Method or /package.Service/*`,
		},
		{
			name:    "method wildcard in the service",
			json:    `{"fencing": {"mode": "on", "grpcWriteMethods": ["/shop.*/Create"]}}`,
			wantErr: `fencing: grpcWriteMethods[0]: "/shop.*/Create" is not /package.Service/Method or /package.Service/*`,
		},
		{
			name:    "method listed twice",
			json:    `{"fencing": {"mode": "on", "grpcWriteMethods": ["/a.B/C", "/a.B/D", "/a.B/C"]}}`,
			wantErr: `fencing: grpcWriteMethods[2]: "/a.B/C" is listed twice`,
		},
		{
			name:    "methods not a list",
			json:    `{"fencing": {"mode": "on", "grpcWriteMethods": "/a.B/C"}}`,
			wantErr: `fencing: grpcWriteMethods: cannot use JSON string as []string`,
		},
		{
			name:    "unknown key in a service entry",
			json:    `{"services": {"orders": {"fencing": {"mode": "on", "leaseRequired": true}}}}`,
			wantErr: `services.orders.fencing: json: unknown field "leaseRequired"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mp, err := decodeMeshPolicy(mustStruct(t, tc.json))
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if diff := cmp.Diff(tc.mesh, mp.Fencing); diff != "" {
				t.Errorf("mesh fencing (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.orders, mp.Services["orders"].Fencing); diff != "" {
				t.Errorf("orders fencing (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFencingFor(t *testing.T) {
	m := &Model{
		Fencing: FencingPolicy{Mode: FencingOff},
		Services: map[string]Service{
			"orders":   {Name: "orders", Fencing: FencingPolicy{Mode: FencingOn, ExpectedSize: 3}},
			"payments": {Name: "payments"},
		},
	}
	for _, tc := range []struct {
		service string
		want    FencingPolicy
	}{
		{"orders", FencingPolicy{Mode: FencingOn, ExpectedSize: 3}},
		{"payments", FencingPolicy{Mode: FencingOff}},
		{"unknown", FencingPolicy{Mode: FencingOff}},
	} {
		if diff := cmp.Diff(tc.want, m.FencingFor(tc.service)); diff != "" {
			t.Errorf("FencingFor(%q) (-want +got):\n%s", tc.service, diff)
		}
	}
	if got := (&Model{}).FencingFor("orders"); got.Mode != FencingOn || !got.Enabled() {
		t.Errorf("default: got %+v, want on", got)
	}
}
