package manifests

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// TestManifests is the CI gate: the manifests decode strictly, every
// kustomization lists exactly its files, and every invariant holds.
func TestManifests(t *testing.T) {
	m, errs := load(os.DirFS("."))
	t.Run("StrictDecodeAndKustomization", func(t *testing.T) {
		for _, err := range errs {
			t.Error(err)
		}
	})
	t.Run("ExpectedObjects", func(t *testing.T) {
		checkExpectedObjects(t, m)
	})
	for _, inv := range invariants {
		t.Run(inv.name, func(t *testing.T) {
			for _, p := range inv.check(m) {
				t.Error(p)
			}
		})
	}
}

// checkExpectedObjects keeps the invariants from passing vacuously: the
// objects the README describes are there.
func checkExpectedObjects(t *testing.T, m *manifests) {
	t.Helper()
	want := []string{
		"Namespace /causeway-system", "ServiceAccount causeway-system/causeway-controlplane",
		"PersistentVolumeClaim causeway-system/causeway-controlplane-data",
		"Deployment causeway-system/causeway-controlplane", "Service causeway-system/causeway-controlplane",
		"Service causeway-system/causeway-gossip",
		"Namespace /demo",
		"Deployment demo/orders", "Service demo/orders",
		"Deployment demo/inventory", "Service demo/inventory",
		"Deployment demo/echo", "Service demo/echo",
	}
	have := map[string]object{}
	for _, o := range m.objects {
		have[o.kind+" "+o.ns+"/"+o.name] = o
	}
	for _, key := range want {
		if _, ok := have[key]; !ok {
			t.Errorf("%s is missing from the manifests", key)
		}
	}
	if o, ok := have["Deployment demo/inventory"]; ok {
		if r := o.obj.(*appsv1.Deployment).Spec.Replicas; r == nil || *r != 2 {
			t.Errorf("%s: want 2 replicas, to show load balancing across sidecars", o)
		}
	}
	if n := len(m.meshWorkloads()); n < 3 {
		t.Errorf("found %d workloads with sidecars, want at least 3", n)
	}
}

// problems runs every check over fsys and returns what each found; load
// errors are under "load".
func problems(fsys fs.FS) map[string][]string {
	out := map[string][]string{}
	m, errs := load(fsys)
	for _, err := range errs {
		out["load"] = append(out["load"], err.Error())
	}
	for _, inv := range invariants {
		if p := inv.check(m); len(p) > 0 {
			out[inv.name] = p
		}
	}
	return out
}

// copyTree reads the manifests into memory so that a test can break them.
func copyTree(t *testing.T) fstest.MapFS {
	t.Helper()
	mfs := fstest.MapFS{}
	err := fs.WalkDir(os.DirFS("."), baseDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		mfs[p] = &fstest.MapFile{Data: data, Mode: 0o644}
		return nil
	})
	if err != nil {
		t.Fatalf("copying the manifests: %v", err)
	}
	return mfs
}

// TestValidatorCatchesBrokenManifests breaks the real manifests one way
// at a time and checks that the validator names the fault. The untouched
// copy must pass, so each failure is caused by its mutation.
func TestValidatorCatchesBrokenManifests(t *testing.T) {
	if p := problems(copyTree(t)); len(p) > 0 {
		t.Fatalf("the unmodified manifests have problems, so the cases below prove nothing: %v", p)
	}
	const (
		echo       = "base/demo/echo.yaml"
		orders     = "base/demo/orders.yaml"
		inventory  = "base/demo/inventory.yaml"
		cpDeploy   = "base/controlplane/deployment.yaml"
		gossipSvc  = "base/controlplane/gossip-service.yaml"
		rootKust   = "base/kustomization.yaml"
		startupYML = `          startupProbe:
            httpGet:
              path: /ready
              port: 15020
`
	)
	cases := []struct {
		name      string
		file      string
		old, new  string // replace the first old with new in file
		add       string // or add file with content new
		remove    bool   // or remove file
		wantCheck string
		wantMsg   string
	}{
		{name: "typo in a field", file: inventory, old: "          readinessProbe:", new: "          readinesProbe:", wantCheck: "load", wantMsg: `unknown field "spec.template.spec.initContainers[0].readinesProbe"`},
		{name: "field in the wrong case", file: echo, old: "  replicas: 1", new: "  Replicas: 1", wantCheck: "load", wantMsg: `unknown field "spec.Replicas"`},
		{name: "misspelt kind", file: gossipSvc, old: "kind: Service", new: "kind: Servce", wantCheck: "load", wantMsg: `no kind "Servce" is registered`},
		{name: "missing startupProbe", file: orders, old: startupYML + "            periodSeconds: 1\n            timeoutSeconds: 1\n            # Up to two minutes for the control plane and the gossip seed.\n            failureThreshold: 120\n", new: "", wantCheck: "NativeSidecar", wantMsg: "sidecar init container causeway-sidecar has no startupProbe"},
		{name: "startupProbe not HTTP", file: orders, old: startupYML, new: "          startupProbe:\n            tcpSocket:\n              port: 15020\n", wantCheck: "NativeSidecar", wantMsg: "startupProbe is not an httpGet"},
		{name: "startupProbe on /live", file: orders, old: "              path: /ready\n", new: "              path: /live\n", wantCheck: "NativeSidecar", wantMsg: "startupProbe is httpGet /live on port 15020, want /ready"},
		{name: "sidecar not restartable", file: echo, old: "          restartPolicy: Always\n", new: "", wantCheck: "NativeSidecar", wantMsg: "lacks restartPolicy: Always"},
		{name: "HTTP_PROXY to the admin port", file: orders, old: "value: http://127.0.0.1:15001", new: "value: http://127.0.0.1:15000", wantCheck: "AppTrafficThroughSidecar", wantMsg: `HTTP_PROXY is "http://127.0.0.1:15000"`},
		{name: "NO_PROXY without localhost", file: echo, old: "value: localhost,127.0.0.1,::1", new: "value: 127.0.0.1", wantCheck: "AppTrafficThroughSidecar", wantMsg: "NO_PROXY does not list localhost"},
		{name: "sidecar announces another service", file: inventory, old: "--service=inventory", new: "--service=stock", wantCheck: "SidecarServiceMatchesSelector", wantMsg: `pod label app.kubernetes.io/name is "inventory" but the sidecar says --service "stock"`},
		{name: "node id fixed", file: inventory, old: "--node-id=$(POD_NAME)", new: "--node-id=inventory", wantCheck: "SidecarMeshWiring", wantMsg: "--node-id must come from the pod name"},
		{name: "advertise without the pod IP", file: echo, old: "--advertise=$(POD_IP)", new: "--advertise=$(POD_NAME)", wantCheck: "SidecarMeshWiring", wantMsg: "--advertise must come from the pod IP"},
		{name: "join by short name", file: echo, old: "--join=causeway-gossip.causeway-system.svc.cluster.local:7946", new: "--join=causeway-gossip:7946", wantCheck: "SidecarMeshWiring", wantMsg: "want a Service's full DNS name"},
		{name: "control plane on the API port", file: orders, old: "causeway-system.svc.cluster.local:18000", new: "causeway-system.svc.cluster.local:18080", wantCheck: "SidecarMeshWiring", wantMsg: "does not reach the control plane's xDS port 18000"},
		{name: "gossip Service with a virtual IP", file: gossipSvc, old: "  clusterIP: None\n", new: "", wantCheck: "GossipServiceHeadless", wantMsg: "clusterIP is not None"},
		{name: "gossip Service hides joining pods", file: gossipSvc, old: "publishNotReadyAddresses: true", new: "publishNotReadyAddresses: false", wantCheck: "GossipServiceHeadless", wantMsg: "publishNotReadyAddresses is not true"},
		{name: "gossip without UDP", file: gossipSvc, old: "      protocol: UDP", new: "      protocol: SCTP", wantCheck: "GossipServiceHeadless", wantMsg: "no port 7946/UDP"},
		{name: "writable root file system", file: echo, old: "readOnlyRootFilesystem: true", new: "readOnlyRootFilesystem: false", wantCheck: "HardenedSecurityContext", wantMsg: "readOnlyRootFilesystem is not true"},
		{name: "capabilities kept", file: cpDeploy, old: "                - ALL", new: "                - NET_RAW", wantCheck: "HardenedSecurityContext", wantMsg: "container controlplane: does not drop ALL capabilities"},
		{name: "runs as root", file: cpDeploy, old: "            runAsNonRoot: true\n            runAsUser: 65532\n", new: "            runAsNonRoot: false\n            runAsUser: 0\n", wantCheck: "HardenedSecurityContext", wantMsg: "runAsNonRoot is not true"},
		{name: "API token mounted", file: echo, old: "      automountServiceAccountToken: false\n", new: "      automountServiceAccountToken: true\n", wantCheck: "HardenedSecurityContext", wantMsg: "mounts an API token"},
		{name: "Service straight to the app", file: echo, old: "targetPort: 15006", new: "targetPort: 8080", wantCheck: "ServicePortsTargetContainerPorts", wantMsg: "targets 8080, which no container"},
		{name: "named target on the sidecar", file: echo, old: "targetPort: 15006", new: "targetPort: mesh-inbound", wantCheck: "ServicePortsTargetContainerPorts", wantMsg: "named targets must be on regular containers"},
		{name: "control plane rolls", file: cpDeploy, old: "type: Recreate", new: "type: RollingUpdate", wantCheck: "ControlPlaneStore", wantMsg: "want Recreate"},
		{name: "data dir off the volume", file: cpDeploy, old: "--data-dir=/var/lib/causeway", new: "--data-dir=/data", wantCheck: "ControlPlaneStore", wantMsg: "nothing is mounted at --data-dir /data"},
		{name: "data dir on an emptyDir", file: cpDeploy, old: "          persistentVolumeClaim:\n            claimName: causeway-controlplane-data\n", new: "          emptyDir: {}\n", wantCheck: "ControlPlaneStore", wantMsg: "is not a PersistentVolumeClaim"},
		{name: "foreign image", file: echo, old: "image: causeway/examples:dev", new: "image: busybox:1.37", wantCheck: "CausewayImages", wantMsg: `image "busybox:1.37" is not one of`},
		{name: "untagged image", file: inventory, old: "image: causeway/sidecar:dev", new: "image: causeway/sidecar", wantCheck: "CausewayImages", wantMsg: "has no tag or digest"},
		{name: "no memory limit", file: echo, old: "              cpu: 250m\n              memory: 128Mi\n", new: "              cpu: 250m\n", wantCheck: "ResourceRequestsAndLimits", wantMsg: "container echo: no memory limit"},
		{name: "request over limit", file: orders, old: "              cpu: 50m\n", new: "              cpu: \"2\"\n", wantCheck: "ResourceRequestsAndLimits", wantMsg: "cpu request 2 exceeds its limit 500m"},
		{name: "no namespace", file: echo, old: "  namespace: demo\n", new: "", wantCheck: "WellFormed", wantMsg: "no metadata.namespace"},
		{name: "selector misses the pods", file: inventory, old: "    matchLabels:\n      app.kubernetes.io/name: inventory\n  template:", new: "    matchLabels:\n      app.kubernetes.io/name: inventory-v2\n  template:", wantCheck: "WellFormed", wantMsg: "does not match the pod template's labels"},
		{name: "file not listed", file: "base/demo/extra.yaml", add: "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: extra\n  namespace: demo\n", wantCheck: "load", wantMsg: `"extra.yaml" is present but not listed`},
		{name: "listed file missing", file: echo, remove: true, wantCheck: "load", wantMsg: `resource "echo.yaml" does not exist`},
		{name: "kustomize transformer", file: rootKust, old: "resources:", new: "namePrefix: x-\nresources:", wantCheck: "load", wantMsg: `unknown field "namePrefix"`},
		{name: "overlay appears", file: "overlays/prod/kustomization.yaml", add: "resources: [../../base]\n", wantCheck: "load", wantMsg: "extend load_test.go before adding overlays"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mfs := copyTree(t)
			switch {
			case tc.remove:
				delete(mfs, tc.file)
			case tc.add != "":
				mfs[tc.file] = &fstest.MapFile{Data: []byte(tc.add), Mode: 0o644}
			default:
				f, ok := mfs[tc.file]
				if !ok || !bytes.Contains(f.Data, []byte(tc.old)) {
					t.Fatalf("%s does not contain %q any more; update this case", tc.file, tc.old)
				}
				f.Data = bytes.Replace(f.Data, []byte(tc.old), []byte(tc.new), 1)
			}
			got := problems(mfs)
			found := got[tc.wantCheck]
			if !slices.ContainsFunc(found, func(p string) bool { return strings.Contains(p, tc.wantMsg) }) {
				t.Errorf("check %s did not report %q; all problems found: %q", tc.wantCheck, tc.wantMsg, got)
			}
		})
	}
}

// TestStrictDecoding covers the decoder on documents of its own.
func TestStrictDecoding(t *testing.T) {
	cases := []struct {
		name    string
		doc     string
		wantErr string // empty: must decode
	}{
		{"valid", "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n  namespace: demo\n", ""},
		{"unknown field", "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\nautomountServiceAcountToken: false\n", `unknown field "automountServiceAcountToken"`},
		{"duplicate key", "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\nmetadata:\n  name: b\n", `key "metadata" already set`},
		{"wrong type", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: a\nspec:\n  replicas: \"2\"\n", "cannot unmarshal string"},
		{"unknown kind", "apiVersion: apps/v1\nkind: Deploymnet\nmetadata:\n  name: a\n", `no kind "Deploymnet" is registered`},
		{"unknown version", "apiVersion: apps/v2\nkind: Deployment\nmetadata:\n  name: a\n", `no kind "Deployment" is registered for version "apps/v2"`},
		{"no apiVersion", "kind: Service\nmetadata:\n  name: a\n", "'apiVersion' is missing"},
		{"no kind", "apiVersion: v1\nmetadata:\n  name: a\n", "'Kind' is missing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeDocument([]byte(tc.doc))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("decode: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("decode succeeded, want an error containing %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("decode error %q, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestKustomizeBuild renders base/ with kustomize (kubectl's built-in) and
// checks that it applies exactly the objects checked above, unchanged. It
// needs kubectl and skips without it.
func TestKustomizeBuild(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not on PATH; the kustomize rendering is not checked")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, kubectl, "kustomize", baseDir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", baseDir, err, stderr.String())
	}
	rendered := fstest.MapFS{"rendered.yaml": &fstest.MapFile{Data: out}}
	objs, err := decodeFile(rendered, "rendered.yaml")
	if err != nil {
		t.Fatalf("decoding kustomize's output: %v", err)
	}
	m, errs := load(os.DirFS("."))
	if len(errs) > 0 {
		t.Fatalf("loading the manifests: %v", errs)
	}
	want := map[string]object{}
	for _, o := range m.objects {
		want[o.kind+" "+o.ns+"/"+o.name] = o
	}
	for _, o := range objs {
		key := o.kind + " " + o.ns + "/" + o.name
		w, ok := want[key]
		if !ok {
			t.Errorf("kustomize renders %s, which is in no checked file", key)
			continue
		}
		delete(want, key)
		if !equality.Semantic.DeepEqual(w.obj, o.obj) {
			t.Errorf("kustomize changes %s; the checks would not see what is applied", w)
		}
	}
	for key := range want {
		t.Errorf("%s is checked but kustomize does not render it", key)
	}
	// The Namespaces come first, so that one apply creates everything.
	for i, o := range objs {
		if _, ok := o.obj.(*corev1.Namespace); !ok {
			if slices.ContainsFunc(objs[i:], func(o object) bool { return o.kind == "Namespace" }) {
				t.Errorf("kustomize renders %s before a Namespace", o)
			}
			break
		}
	}
}
