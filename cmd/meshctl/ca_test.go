package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/causeway-mesh/causeway/control/ca/rotation"
)

func TestCAStatusAndRotate(t *testing.T) {
	p, dataDir := startTLSPlane(t)
	env := map[string]string{"MESH_SERVER": "https://" + p.APIAddr(), "MESH_DATA_DIR": dataDir}

	code, out, errs := meshctl(t, env, "ca", "status")
	if code != 0 || !strings.Contains(out, "CA: self-managed, trust domain causeway.local, stage stable") ||
		!strings.Contains(out, "signing") || !strings.Contains(out, "next: prepare: ready") {
		t.Fatalf("status: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, _, errs = meshctl(t, env, "ca", "rotate", "activate")
	if code != 1 || !strings.Contains(errs, "409 Conflict") || !strings.Contains(errs, "prepare starts a rotation") {
		t.Fatalf("activate before prepare: exit %d, stderr %q", code, errs)
	}
	for _, step := range []struct{ stage, want string }{
		{"prepare", "the CA is now prepared"},
		{"activate", "the CA is now activated"},
		{"prune", "the CA is now stable"},
	} {
		code, out, errs = meshctl(t, env, "ca", "rotate", step.stage)
		if code != 0 || !strings.Contains(out, step.want) {
			t.Fatalf("rotate %s: exit %d, stdout %q, stderr %q", step.stage, code, out, errs)
		}
	}
	code, out, errs = meshctl(t, env, "ca", "status", "-o", "json")
	var st rotation.Status
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
		t.Fatalf("-o json: exit %d, %v, stdout %q, stderr %q", code, err, out, errs)
	}
	if st.Stage != "stable" || len(st.Roots) != 1 || !st.Roots[0].Signing {
		t.Fatalf("after a rotation: %+v", st)
	}
}

func TestCAErrors(t *testing.T) {
	plain, _ := startPlane(t)
	plainEnv := map[string]string{"MESH_SERVER": "http://" + plain.APIAddr(), "MESH_TOKEN": plain.Token()}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no TLS: status", plainEnv, []string{"ca", "status"}, "only when it runs with --tls"},
		{"no TLS: rotate", plainEnv, []string{"ca", "rotate", "prepare"}, "only when it runs with --tls"},
		{"unknown stage", plainEnv, []string{"ca", "rotate", "rollback"}, "want prepare, activate or prune"},
		{"no stage", plainEnv, []string{"ca", "rotate"}, "accepts 1 arg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := meshctl(t, tt.env, tt.args...)
			if code != 1 || out != "" || !strings.Contains(errs, tt.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 1 and %q", code, out, errs, tt.want)
			}
		})
	}
}
