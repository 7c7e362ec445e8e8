package manifests

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The contract the manifests are checked against (PRODUCT.md, the images
// built by deploy/docker/build-images.sh).
const (
	sidecarImage      = "causeway/sidecar"
	controlPlaneImage = "causeway/controlplane"
	examplesImage     = "causeway/examples"
	meshctlImage      = "causeway/meshctl"

	imageUID = 65532 // the user every Causeway image runs as

	healthPort   = 15020 // sidecar /ready, /live, /metrics
	inboundPort  = 15006 // sidecar: calls from other sidecars
	gossipPort   = 7946  // sidecar and control plane, TCP and UDP
	xdsPort      = 18000 // control plane
	outboundURL  = "http://127.0.0.1:15001"
	clusterZone  = "svc.cluster.local"
	serviceLabel = "app.kubernetes.io/name" // the label a Service selects a mesh workload by
)

// exampleBinaries are the commands the examples image holds.
var exampleBinaries = []string{"/usr/local/bin/echo", "/usr/local/bin/orders", "/usr/local/bin/inventory"}

// invariant is one property the mesh depends on, checked over the whole
// set of manifests. check returns every violation, each naming the object
// and container at fault.
type invariant struct {
	name  string
	check func(*manifests) []string
}

var invariants = []invariant{
	{"WellFormed", checkWellFormed},
	{"NativeSidecar", checkNativeSidecar},
	{"AppTrafficThroughSidecar", checkAppProxyEnv},
	{"SidecarServiceMatchesSelector", checkSidecarService},
	{"SidecarMeshWiring", checkSidecarWiring},
	{"HardenedSecurityContext", checkSecurity},
	{"ServicePortsTargetContainerPorts", checkServicePorts},
	{"GossipServiceHeadless", checkGossipService},
	{"ControlPlaneStore", checkControlPlaneStore},
	{"CausewayImages", checkImages},
	{"ResourceRequestsAndLimits", checkResources},
}

// workload is an object that runs pods.
type workload struct {
	object
	template *corev1.PodTemplateSpec
	selector *metav1.LabelSelector
}

func (m *manifests) workloads() []workload {
	var ws []workload
	for _, o := range m.objects {
		switch v := o.obj.(type) {
		case *appsv1.Deployment:
			ws = append(ws, workload{o, &v.Spec.Template, v.Spec.Selector})
		case *appsv1.StatefulSet:
			ws = append(ws, workload{o, &v.Spec.Template, v.Spec.Selector})
		case *appsv1.DaemonSet:
			ws = append(ws, workload{o, &v.Spec.Template, v.Spec.Selector})
		case *appsv1.ReplicaSet:
			ws = append(ws, workload{o, &v.Spec.Template, v.Spec.Selector})
		case *batchv1.Job:
			ws = append(ws, workload{o, &v.Spec.Template, v.Spec.Selector})
		case *batchv1.CronJob:
			ws = append(ws, workload{o, &v.Spec.JobTemplate.Spec.Template, nil})
		case *corev1.Pod:
			ws = append(ws, workload{o, &corev1.PodTemplateSpec{ObjectMeta: v.ObjectMeta, Spec: v.Spec}, nil})
		}
	}
	return ws
}

// isControlPlane reports whether w runs the control plane (it has no
// sidecar; everything else in the mesh must).
func (w workload) isControlPlane() bool {
	return slices.ContainsFunc(w.template.Spec.Containers, func(c corev1.Container) bool {
		return imageRepo(c.Image) == controlPlaneImage
	})
}

func (m *manifests) meshWorkloads() []workload {
	var ws []workload
	for _, w := range m.workloads() {
		if !w.isControlPlane() {
			ws = append(ws, w)
		}
	}
	return ws
}

func (m *manifests) services() []*corev1.Service {
	var ss []*corev1.Service
	for _, o := range m.objects {
		if s, ok := o.obj.(*corev1.Service); ok {
			ss = append(ss, s)
		}
	}
	return ss
}

func (m *manifests) service(ns, name string) *corev1.Service {
	for _, s := range m.services() {
		if s.Namespace == ns && s.Name == name {
			return s
		}
	}
	return nil
}

// selects reports whether Service s sends traffic to w's pods.
func selects(s *corev1.Service, w workload) bool {
	return len(s.Spec.Selector) > 0 && s.Namespace == w.ns &&
		labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(w.template.Labels))
}

// sidecars returns the containers of pod that run the sidecar image, as
// init containers and as regular containers.
func sidecars(pod *corev1.PodSpec) (initC, regular []*corev1.Container) {
	for i := range pod.InitContainers {
		if imageRepo(pod.InitContainers[i].Image) == sidecarImage {
			initC = append(initC, &pod.InitContainers[i])
		}
	}
	for i := range pod.Containers {
		if imageRepo(pod.Containers[i].Image) == sidecarImage {
			regular = append(regular, &pod.Containers[i])
		}
	}
	return initC, regular
}

// allContainers returns every container of pod with a label for messages.
func allContainers(pod *corev1.PodSpec) map[string]*corev1.Container {
	cs := map[string]*corev1.Container{}
	for i := range pod.InitContainers {
		cs["init container "+pod.InitContainers[i].Name] = &pod.InitContainers[i]
	}
	for i := range pod.Containers {
		cs["container "+pod.Containers[i].Name] = &pod.Containers[i]
	}
	return cs
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// imageRepo strips the tag or digest from an image reference.
func imageRepo(image string) string {
	repo, _, _ := strings.Cut(image, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	return repo
}

// setting is the value a Causeway binary in c takes for a flag: from its
// arguments (--flag=value or --flag value; the last one wins, as in
// pflag), else from the MESH_* variable. fieldPath is set when the value
// comes from the downward API, directly or through $(VAR).
type setting struct {
	value     string
	fieldPath string
	from      string // "args" or the variable's name, for messages
}

var varRef = regexp.MustCompile(`^\$\(([A-Za-z_][A-Za-z0-9_]*)\)$`)

func lookupSetting(c *corev1.Container, flag string) (setting, bool) {
	var s setting
	found := false
	args := append(slices.Clone(c.Command), c.Args...)
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case strings.HasPrefix(a, "--"+flag+"="):
			s, found = setting{value: strings.TrimPrefix(a, "--"+flag+"="), from: "args"}, true
		case a == "--"+flag && i+1 < len(args):
			s, found = setting{value: args[i+1], from: "args"}, true
			i++
		}
	}
	if !found {
		env := "MESH_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
		for _, e := range c.Env {
			if e.Name != env {
				continue
			}
			s, found = setting{value: e.Value, from: env}, true
			if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
				s.fieldPath = e.ValueFrom.FieldRef.FieldPath
			}
		}
	}
	if found && s.fieldPath == "" {
		if m := varRef.FindStringSubmatch(s.value); m != nil {
			if e := envVar(c, m[1]); e != nil && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
				s.fieldPath = e.ValueFrom.FieldRef.FieldPath
			}
		}
	}
	return s, found
}

func envVar(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// probePort resolves a probe's port (a number, or a name declared on c).
func probePort(c *corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return 0
}

// checkHTTPProbe describes what is wrong with probe (nil: nothing).
func checkHTTPProbe(c *corev1.Container, kind string, p *corev1.Probe, wantPath string, wantPort int32) string {
	switch {
	case p == nil:
		return fmt.Sprintf("has no %s (want httpGet %s on port %d)", kind, wantPath, wantPort)
	case p.HTTPGet == nil:
		return fmt.Sprintf("%s is not an httpGet (want httpGet %s on port %d)", kind, wantPath, wantPort)
	case p.HTTPGet.Path != wantPath || probePort(c, p.HTTPGet.Port) != wantPort:
		return fmt.Sprintf("%s is httpGet %s on port %s, want %s on port %d", kind, p.HTTPGet.Path, p.HTTPGet.Port.String(), wantPath, wantPort)
	}
	return ""
}

// checkNativeSidecar: every mesh pod has exactly one sidecar, as a native
// sidecar (an init container with restartPolicy Always) whose startup
// probe holds the app back until the proxy reports ready.
func checkNativeSidecar(m *manifests) []string {
	var errs []string
	for _, w := range m.meshWorkloads() {
		initC, regular := sidecars(&w.template.Spec)
		for _, c := range regular {
			errs = append(errs, fmt.Sprintf("%s: container %s runs the sidecar as a regular container; it must be an init container with restartPolicy: Always so that the app starts after it and stops before it", w, c.Name))
		}
		if len(initC) != 1 {
			errs = append(errs, fmt.Sprintf("%s: has %d sidecar init containers (image %s), want exactly 1", w, len(initC), sidecarImage))
			continue
		}
		c := initC[0]
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			errs = append(errs, fmt.Sprintf("%s: sidecar init container %s lacks restartPolicy: Always; without it the pod waits for the proxy to exit before starting the app", w, c.Name))
		}
		for _, p := range []struct {
			kind  string
			probe *corev1.Probe
			path  string
		}{
			{"startupProbe", c.StartupProbe, "/ready"},
			{"readinessProbe", c.ReadinessProbe, "/ready"},
			{"livenessProbe", c.LivenessProbe, "/live"},
		} {
			if msg := checkHTTPProbe(c, p.kind, p.probe, p.path, healthPort); msg != "" {
				errs = append(errs, fmt.Sprintf("%s: sidecar init container %s %s", w, c.Name, msg))
			}
		}
	}
	return errs
}

// checkAppProxyEnv: app containers send their calls to the sidecar's
// outbound listener and keep loopback traffic direct.
func checkAppProxyEnv(m *manifests) []string {
	var errs []string
	for _, w := range m.meshWorkloads() {
		for i := range w.template.Spec.Containers {
			c := &w.template.Spec.Containers[i]
			if imageRepo(c.Image) == sidecarImage {
				continue // reported by NativeSidecar
			}
			if e := envVar(c, "HTTP_PROXY"); e == nil || e.ValueFrom != nil || e.Value != outboundURL {
				got := "unset"
				if e != nil {
					got = fmt.Sprintf("%q", e.Value)
				}
				errs = append(errs, fmt.Sprintf("%s: container %s: HTTP_PROXY is %s, want %q (the sidecar's outbound listener)", w, c.Name, got, outboundURL))
			}
			e := envVar(c, "NO_PROXY")
			var hosts []string
			if e != nil {
				for h := range strings.SplitSeq(e.Value, ",") {
					hosts = append(hosts, strings.TrimSpace(h))
				}
			}
			for _, want := range []string{"localhost", "127.0.0.1"} {
				if !slices.Contains(hosts, want) {
					errs = append(errs, fmt.Sprintf("%s: container %s: NO_PROXY does not list %s, so calls to the local sidecar itself would be proxied", w, c.Name, want))
				}
			}
		}
	}
	return errs
}

// sidecarOf returns w's single sidecar init container, or nil (reported by
// NativeSidecar).
func sidecarOf(w workload) *corev1.Container {
	initC, _ := sidecars(&w.template.Spec)
	if len(initC) != 1 {
		return nil
	}
	return initC[0]
}

// checkSidecarService: the sidecar announces the service its pod is
// selected as, so the mesh and Kubernetes agree on names.
func checkSidecarService(m *manifests) []string {
	var errs []string
	for _, w := range m.meshWorkloads() {
		c := sidecarOf(w)
		if c == nil {
			continue
		}
		svc, ok := lookupSetting(c, "service")
		if !ok || svc.value == "" {
			errs = append(errs, fmt.Sprintf("%s: sidecar has no --service", w))
			continue
		}
		if len(validation.IsDNS1123Label(svc.value)) > 0 {
			errs = append(errs, fmt.Sprintf("%s: sidecar --service %q is not a DNS label", w, svc.value))
		}
		if got := w.template.Labels[serviceLabel]; got != svc.value {
			errs = append(errs, fmt.Sprintf("%s: pod label %s is %q but the sidecar says --service %q", w, serviceLabel, got, svc.value))
		}
		s := m.service(w.ns, svc.value)
		switch {
		case s == nil:
			errs = append(errs, fmt.Sprintf("%s: no Service %s/%s for sidecar --service %q", w, w.ns, svc.value, svc.value))
		case !selects(s, w):
			errs = append(errs, fmt.Sprintf("%s: Service %s/%s (selector %v) does not select this workload's pods (labels %v), but its sidecar says --service %q", w, s.Namespace, s.Name, s.Spec.Selector, w.template.Labels, svc.value))
		case s.Spec.Selector[serviceLabel] != svc.value:
			errs = append(errs, fmt.Sprintf("%s: Service %s/%s selects %s=%q, want the sidecar's --service %q", w, s.Namespace, s.Name, serviceLabel, s.Spec.Selector[serviceLabel], svc.value))
		}
		for _, other := range m.services() {
			if other.Name != svc.value && selects(other, w) && other.Spec.ClusterIP != corev1.ClusterIPNone {
				errs = append(errs, fmt.Sprintf("%s: Service %s/%s also selects these pods, whose sidecar says --service %q", w, other.Namespace, other.Name, svc.value))
			}
		}
	}
	return errs
}

// clusterService resolves HOST:PORT naming a Service by its cluster DNS
// name (NAME.NAMESPACE.svc.cluster.local).
func (m *manifests) clusterService(hostPort string) (*corev1.Service, int32, error) {
	host, portStr, err := net.SplitHostPort(hostPort)
	if err != nil {
		return nil, 0, fmt.Errorf("%q: want HOST:PORT", hostPort)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, 0, fmt.Errorf("%q: bad port", hostPort)
	}
	name, rest, _ := strings.Cut(host, ".")
	ns, zone, _ := strings.Cut(rest, ".")
	if zone != clusterZone {
		return nil, 0, fmt.Errorf("%q: want a Service's full DNS name, NAME.NAMESPACE.%s:PORT (the pod runs in another namespace)", hostPort, clusterZone)
	}
	s := m.service(ns, name)
	if s == nil {
		return nil, 0, fmt.Errorf("%q: no Service %s/%s in the manifests", hostPort, ns, name)
	}
	if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == int32(port) }) {
		return nil, 0, fmt.Errorf("%q: Service %s/%s has no port %d", hostPort, ns, name, port)
	}
	return s, int32(port), nil
}

// controlPlanes returns the control-plane workloads.
func (m *manifests) controlPlanes() []workload {
	var ws []workload
	for _, w := range m.workloads() {
		if w.isControlPlane() {
			ws = append(ws, w)
		}
	}
	return ws
}

// selectsControlPlane reports whether s sends traffic to a control plane.
func (m *manifests) selectsControlPlane(s *corev1.Service) bool {
	return slices.ContainsFunc(m.controlPlanes(), func(w workload) bool { return selects(s, w) })
}

// checkSidecarWiring: each sidecar names itself after its pod, advertises
// its pod IP, joins the gossip Service and reaches the control plane's
// xDS port, and forwards to an app on loopback.
func checkSidecarWiring(m *manifests) []string {
	var errs []string
	for _, w := range m.meshWorkloads() {
		c := sidecarOf(w)
		if c == nil {
			continue
		}
		fail := func(format string, args ...any) {
			errs = append(errs, fmt.Sprintf("%s: sidecar ", w)+fmt.Sprintf(format, args...))
		}
		if s, _ := lookupSetting(c, "node-id"); s.fieldPath != "metadata.name" {
			fail("--node-id must come from the pod name (downward API fieldRef metadata.name), got %q", s.value)
		}
		if s, _ := lookupSetting(c, "advertise"); s.fieldPath != "status.podIP" {
			fail("--advertise must come from the pod IP (downward API fieldRef status.podIP), got %q", s.value)
		}
		if s, ok := lookupSetting(c, "app"); !ok {
			fail("has no --app")
		} else if host, _, err := net.SplitHostPort(s.value); err != nil || host != "127.0.0.1" {
			fail("--app %q: want 127.0.0.1:PORT, the app in the same pod", s.value)
		}
		if s, ok := lookupSetting(c, "app-protocol"); !ok || !slices.Contains([]string{"http1", "h2c", "grpc", "tcp"}, s.value) {
			fail("--app-protocol %q: want http1, h2c, grpc or tcp", s.value)
		}
		join, ok := lookupSetting(c, "join")
		if !ok || join.value == "" {
			fail("has no --join: it would start a gossip pool of its own")
		} else {
			for seed := range strings.SplitSeq(join.value, ",") {
				s, port, err := m.clusterService(seed)
				switch {
				case err != nil:
					fail("--join %v", err)
				case port != gossipPort:
					fail("--join %q: want port %d", seed, gossipPort)
				case s.Spec.ClusterIP != corev1.ClusterIPNone:
					fail("--join %q: Service %s/%s is not headless, so a seed would be a virtual IP that load-balances gossip", seed, s.Namespace, s.Name)
				case !m.selectsControlPlane(s):
					fail("--join %q: Service %s/%s does not select the control plane", seed, s.Namespace, s.Name)
				}
			}
		}
		cp, ok := lookupSetting(c, "control-plane")
		if !ok || cp.value == "" {
			fail("has no --control-plane")
			continue
		}
		s, port, err := m.clusterService(cp.value)
		if err != nil {
			fail("--control-plane %v", err)
			continue
		}
		if !m.selectsControlPlane(s) {
			fail("--control-plane %q: Service %s/%s does not select the control plane", cp.value, s.Namespace, s.Name)
		}
		for _, sp := range s.Spec.Ports {
			if sp.Port != port {
				continue
			}
			for _, w := range m.controlPlanes() {
				if n, ok := targetContainerPort(w, sp); selects(s, w) && (!ok || n != xdsPort) {
					fail("--control-plane %q: Service port %d does not reach the control plane's xDS port %d", cp.value, port, xdsPort)
				}
			}
		}
	}
	return errs
}

// effective returns the container's security setting, else the pod's.
func effectiveBool(c, pod *bool) *bool {
	if c != nil {
		return c
	}
	return pod
}

// checkSecurity: every container runs as the images' unprivileged user,
// cannot gain privileges, has a read-only root file system, no
// capabilities and the runtime's seccomp profile; no pod shares host
// namespaces or carries an API token it does not use.
func checkSecurity(m *manifests) []string {
	var errs []string
	sas := map[string]*corev1.ServiceAccount{}
	for _, o := range m.objects {
		if sa, ok := o.obj.(*corev1.ServiceAccount); ok {
			sas[sa.Namespace+"/"+sa.Name] = sa
		}
	}
	for _, w := range m.workloads() {
		spec := &w.template.Spec
		psc := spec.SecurityContext
		if psc == nil {
			psc = &corev1.PodSecurityContext{}
		}
		if spec.HostNetwork || spec.HostPID || spec.HostIPC {
			errs = append(errs, fmt.Sprintf("%s: shares a host namespace (hostNetwork, hostPID or hostIPC)", w))
		}
		automount := spec.AutomountServiceAccountToken
		saName := cmpOr(spec.ServiceAccountName, "default")
		if sa := sas[w.ns+"/"+saName]; automount == nil && sa != nil {
			automount = sa.AutomountServiceAccountToken
		}
		if automount == nil || *automount {
			errs = append(errs, fmt.Sprintf("%s: mounts an API token (ServiceAccount %s); nothing in Causeway calls the Kubernetes API, so set automountServiceAccountToken: false", w, saName))
		}
		cs := allContainers(spec)
		for _, label := range sortedKeys(cs) {
			sc := cs[label].SecurityContext
			if sc == nil {
				sc = &corev1.SecurityContext{}
			}
			fail := func(format string, args ...any) {
				errs = append(errs, fmt.Sprintf("%s: %s: ", w, label)+fmt.Sprintf(format, args...))
			}
			if v := effectiveBool(sc.RunAsNonRoot, psc.RunAsNonRoot); v == nil || !*v {
				fail("runAsNonRoot is not true")
			}
			uid := sc.RunAsUser
			if uid == nil {
				uid = psc.RunAsUser
			}
			if uid == nil || *uid != imageUID {
				fail("runAsUser is not %d, the user the images are built for", imageUID)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				fail("readOnlyRootFilesystem is not true")
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				fail("allowPrivilegeEscalation is not false")
			}
			if sc.Privileged != nil && *sc.Privileged {
				fail("is privileged")
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
				fail("does not drop ALL capabilities")
			} else if len(sc.Capabilities.Add) > 0 {
				fail("adds capabilities %v", sc.Capabilities.Add)
			}
			seccomp := sc.SeccompProfile
			if seccomp == nil {
				seccomp = psc.SeccompProfile
			}
			if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
				fail("seccompProfile is not RuntimeDefault")
			}
		}
	}
	return errs
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// targetContainerPort resolves Service port sp on w's pods: a number must
// be declared by a container or a native sidecar with the same protocol; a
// name must be declared by a regular container (Kubernetes resolves named
// target ports on regular containers).
func targetContainerPort(w workload, sp corev1.ServicePort) (int32, bool) {
	proto := sp.Protocol
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	matches := func(cp corev1.ContainerPort) bool {
		p := cp.Protocol
		if p == "" {
			p = corev1.ProtocolTCP
		}
		if p != proto {
			return false
		}
		switch {
		case sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal != "":
			return cp.Name == sp.TargetPort.StrVal
		case sp.TargetPort.IntVal != 0:
			return cp.ContainerPort == sp.TargetPort.IntVal
		default:
			return cp.ContainerPort == sp.Port
		}
	}
	spec := &w.template.Spec
	candidates := slices.Clone(spec.Containers)
	if sp.TargetPort.Type != intstr.String {
		for _, c := range spec.InitContainers {
			if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
				candidates = append(candidates, c)
			}
		}
	}
	for _, c := range candidates {
		for _, cp := range c.Ports {
			if matches(cp) {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

// checkServicePorts: every Service selects pods, and each of its ports
// reaches a port a container of those pods declares.
func checkServicePorts(m *manifests) []string {
	var errs []string
	for _, s := range m.services() {
		id := fmt.Sprintf("Service %s/%s", s.Namespace, s.Name)
		if len(s.Spec.Selector) == 0 {
			errs = append(errs, id+": has no selector")
			continue
		}
		var selected []workload
		for _, w := range m.workloads() {
			if selects(s, w) {
				selected = append(selected, w)
			}
		}
		if len(selected) == 0 {
			errs = append(errs, fmt.Sprintf("%s: selector %v matches no workload's pods", id, s.Spec.Selector))
		}
		for _, sp := range s.Spec.Ports {
			for _, w := range selected {
				n, ok := targetContainerPort(w, sp)
				switch {
				case !ok:
					errs = append(errs, fmt.Sprintf("%s: port %q (%d/%s) targets %s, which no container of %s declares with that protocol (named targets must be on regular containers)", id, sp.Name, sp.Port, cmpOr(string(sp.Protocol), "TCP"), sp.TargetPort.String(), w))
				case !w.isControlPlane() && !slices.Contains([]int32{inboundPort, healthPort, gossipPort}, n):
					errs = append(errs, fmt.Sprintf("%s: port %q reaches port %d of %s, which bypasses the sidecar; target its inbound port %d", id, sp.Name, n, w, inboundPort))
				}
			}
		}
	}
	return errs
}

// checkGossipService: the Services sidecars join are headless, publish
// pods before they are ready, and carry gossip over TCP and UDP.
func checkGossipService(m *manifests) []string {
	var errs []string
	seeds := map[string]*corev1.Service{}
	for _, w := range m.meshWorkloads() {
		c := sidecarOf(w)
		if c == nil {
			continue
		}
		join, _ := lookupSetting(c, "join")
		for seed := range strings.SplitSeq(join.value, ",") {
			if s, _, err := m.clusterService(seed); err == nil {
				seeds[s.Namespace+"/"+s.Name] = s
			}
		}
	}
	if len(m.meshWorkloads()) > 0 && len(seeds) == 0 {
		errs = append(errs, "no sidecar joins a gossip Service in the manifests")
	}
	for _, key := range sortedKeys(seeds) {
		s := seeds[key]
		id := "gossip Service " + key
		if s.Spec.ClusterIP != corev1.ClusterIPNone {
			errs = append(errs, id+": clusterIP is not None; gossip needs the members' own addresses, not a load-balanced virtual IP")
		}
		if !s.Spec.PublishNotReadyAddresses {
			errs = append(errs, id+": publishNotReadyAddresses is not true; a member must be reachable while it joins, before it is ready")
		}
		for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
			if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool {
				return p.Port == gossipPort && cmpOr(string(p.Protocol), "TCP") == string(proto)
			}) {
				errs = append(errs, fmt.Sprintf("%s: no port %d/%s (gossip uses both TCP and UDP)", id, gossipPort, proto))
			}
		}
	}
	return errs
}

// checkControlPlaneStore: one control plane, replaced (never rolled)
// because its bbolt store is locked by one process, with the store on a
// PersistentVolumeClaim mounted at --data-dir.
func checkControlPlaneStore(m *manifests) []string {
	cps := m.controlPlanes()
	if len(cps) != 1 {
		return []string{fmt.Sprintf("found %d control-plane workloads (image %s), want exactly 1", len(cps), controlPlaneImage)}
	}
	w := cps[0]
	var errs []string
	d, ok := w.obj.(*appsv1.Deployment)
	if !ok {
		return []string{fmt.Sprintf("%s: the control plane must be a Deployment", w)}
	}
	if d.Spec.Replicas != nil && *d.Spec.Replicas != 1 {
		errs = append(errs, fmt.Sprintf("%s: replicas %d, want 1: the store is one bbolt file, locked by one process", w, *d.Spec.Replicas))
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		errs = append(errs, fmt.Sprintf("%s: strategy %q, want Recreate: during a rolling update the new pod would wait forever for the old one's store lock", w, d.Spec.Strategy.Type))
	}
	pvcs := map[string]*corev1.PersistentVolumeClaim{}
	for _, o := range m.objects {
		if p, ok := o.obj.(*corev1.PersistentVolumeClaim); ok {
			pvcs[p.Namespace+"/"+p.Name] = p
		}
	}
	for i := range w.template.Spec.Containers {
		c := &w.template.Spec.Containers[i]
		if imageRepo(c.Image) != controlPlaneImage {
			continue
		}
		dir, ok := lookupSetting(c, "data-dir")
		if !ok || !strings.HasPrefix(dir.value, "/") {
			errs = append(errs, fmt.Sprintf("%s: container %s: --data-dir %q, want an absolute path on the PersistentVolumeClaim (the default, ./causeway-data, is on the read-only root file system)", w, c.Name, dir.value))
			continue
		}
		mount := slices.IndexFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.MountPath == dir.value })
		if mount < 0 {
			errs = append(errs, fmt.Sprintf("%s: container %s: nothing is mounted at --data-dir %s", w, c.Name, dir.value))
			continue
		}
		vm := c.VolumeMounts[mount]
		if vm.ReadOnly || vm.SubPath != "" {
			errs = append(errs, fmt.Sprintf("%s: container %s: the mount at %s must be writable and whole (no readOnly, no subPath)", w, c.Name, dir.value))
		}
		vol := slices.IndexFunc(w.template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == vm.Name })
		switch {
		case vol < 0:
			errs = append(errs, fmt.Sprintf("%s: volume %q mounted at %s is not declared", w, vm.Name, dir.value))
		case w.template.Spec.Volumes[vol].PersistentVolumeClaim == nil:
			errs = append(errs, fmt.Sprintf("%s: volume %q mounted at --data-dir %s is not a PersistentVolumeClaim; policy and the API token would be lost on restart", w, vm.Name, dir.value))
		default:
			claim := w.template.Spec.Volumes[vol].PersistentVolumeClaim.ClaimName
			if pvcs[w.ns+"/"+claim] == nil {
				errs = append(errs, fmt.Sprintf("%s: PersistentVolumeClaim %s/%s is not in the manifests", w, w.ns, claim))
			}
		}
	}
	return errs
}

// checkImages: containers run the images build-images.sh produces, by a
// pinned tag or digest, and example containers name their binary.
func checkImages(m *manifests) []string {
	var errs []string
	known := []string{sidecarImage, controlPlaneImage, examplesImage, meshctlImage}
	for _, w := range m.workloads() {
		cs := allContainers(&w.template.Spec)
		for _, label := range sortedKeys(cs) {
			c := cs[label]
			repo := imageRepo(c.Image)
			switch {
			case !slices.Contains(known, repo):
				errs = append(errs, fmt.Sprintf("%s: %s: image %q is not one of %v", w, label, c.Image, known))
			case repo == c.Image || strings.HasSuffix(c.Image, ":latest"):
				errs = append(errs, fmt.Sprintf("%s: %s: image %q has no tag or digest (or :latest); pin one", w, label, c.Image))
			}
			if repo == examplesImage && (len(c.Command) != 1 || !slices.Contains(exampleBinaries, c.Command[0])) {
				errs = append(errs, fmt.Sprintf("%s: %s: the examples image holds several programs; command must be one of %v, got %v", w, label, exampleBinaries, c.Command))
			}
		}
	}
	return errs
}

// checkResources: every container requests and is limited in CPU and
// memory, with requests no larger than limits.
func checkResources(m *manifests) []string {
	var errs []string
	for _, w := range m.workloads() {
		cs := allContainers(&w.template.Spec)
		for _, label := range sortedKeys(cs) {
			r := cs[label].Resources
			for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, hasReq := r.Requests[name]
				lim, hasLim := r.Limits[name]
				switch {
				case !hasReq:
					errs = append(errs, fmt.Sprintf("%s: %s: no %s request", w, label, name))
				case !hasLim:
					errs = append(errs, fmt.Sprintf("%s: %s: no %s limit", w, label, name))
				case req.Cmp(lim) > 0:
					errs = append(errs, fmt.Sprintf("%s: %s: %s request %s exceeds its limit %s", w, label, name, req.String(), lim.String()))
				}
			}
		}
	}
	return errs
}

// checkWellFormed: what the API server would refuse, or what would land
// somewhere unintended: namespaced objects name a declared namespace,
// names are valid and unique, workload selectors match their pods, port
// names are valid and unique within a pod, ServiceAccounts exist.
func checkWellFormed(m *manifests) []string {
	var errs []string
	namespaces := map[string]bool{}
	seen := map[string]object{}
	for _, o := range m.objects {
		if o.kind == "Namespace" {
			namespaces[o.name] = true
		}
	}
	for _, o := range m.objects {
		key := o.kind + " " + o.ns + "/" + o.name
		if prev, dup := seen[key]; dup {
			errs = append(errs, fmt.Sprintf("%s: duplicates %s", o, prev))
		}
		seen[key] = o
		for _, msg := range validation.IsDNS1123Subdomain(o.name) {
			errs = append(errs, fmt.Sprintf("%s: name: %s", o, msg))
		}
		switch o.obj.(type) {
		case *corev1.Namespace, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding, *corev1.PersistentVolume:
			if o.ns != "" {
				errs = append(errs, fmt.Sprintf("%s: is cluster-scoped but sets metadata.namespace", o))
			}
		default:
			if o.ns == "" {
				errs = append(errs, fmt.Sprintf("%s: no metadata.namespace; it would land in whatever namespace kubectl is pointed at", o))
			} else if !namespaces[o.ns] {
				errs = append(errs, fmt.Sprintf("%s: namespace %q is not declared in the manifests", o, o.ns))
			}
		}
	}
	for _, w := range m.workloads() {
		if w.selector != nil {
			sel, err := metav1.LabelSelectorAsSelector(w.selector)
			switch {
			case err != nil:
				errs = append(errs, fmt.Sprintf("%s: selector: %v", w, err))
			case sel.Empty() || !sel.Matches(labels.Set(w.template.Labels)):
				errs = append(errs, fmt.Sprintf("%s: selector %v does not match the pod template's labels %v", w, w.selector.MatchLabels, w.template.Labels))
			}
		}
		if sa := w.template.Spec.ServiceAccountName; sa != "" && seen["ServiceAccount "+w.ns+"/"+sa].obj == nil {
			errs = append(errs, fmt.Sprintf("%s: ServiceAccount %s/%s is not in the manifests", w, w.ns, sa))
		}
		portNames := map[string]string{}
		cs := allContainers(&w.template.Spec)
		for _, label := range sortedKeys(cs) {
			for _, p := range cs[label].Ports {
				if p.Name == "" {
					continue
				}
				for _, msg := range validation.IsValidPortName(p.Name) {
					errs = append(errs, fmt.Sprintf("%s: %s: port name %q: %s", w, label, p.Name, msg))
				}
				if other, dup := portNames[p.Name]; dup {
					errs = append(errs, fmt.Sprintf("%s: %s: port name %q is also used by %s", w, label, p.Name, other))
				}
				portNames[p.Name] = label
			}
		}
	}
	return errs
}
