// Package manifests checks Causeway's Kubernetes manifests (base/ and, when
// present, overlays/): every document decodes strictly into its typed
// Kubernetes object, every kustomization lists exactly the files beside it,
// and the invariants the mesh relies on hold. It has no non-test code: it
// is the CI gate for this directory.
package manifests

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// baseDir holds the manifests, relative to this module.
const baseDir = "base"

// overlaysDir is where kustomize overlays would go. Overlays use patches
// and transformers that these checks do not apply yet, so one appearing
// is an error until they do: it would otherwise reach clusters unchecked.
const overlaysDir = "overlays"

const kustomizationFile = "kustomization.yaml"

// object is one decoded manifest document.
type object struct {
	file  string // path relative to the module root
	index int    // 0-based document index within the file
	obj   runtime.Object
	kind  string
	ns    string
	name  string
}

func (o object) String() string {
	id := o.name
	if o.ns != "" {
		id = o.ns + "/" + o.name
	}
	return fmt.Sprintf("%s (document %d): %s %s", o.file, o.index+1, o.kind, id)
}

// manifests is every object found under the roots.
type manifests struct {
	objects []object
}

// scheme knows every kind the manifests may use. A kind not registered
// here is an error, not something skipped: an unchecked object is how a
// broken manifest reaches a cluster.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme,
		rbacv1.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(fmt.Sprintf("building the scheme: %v", err))
		}
	}
	return s
}()

// strictDecoder decodes YAML the way the API server does with
// fieldValidation=Strict: unknown fields, fields in the wrong case,
// duplicate keys and values of the wrong type are errors.
var strictDecoder = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
	kjson.SerializerOptions{Yaml: true, Strict: true})

// decodeDocument strictly decodes one YAML document into its typed object,
// chosen by apiVersion and kind.
func decodeDocument(doc []byte) (runtime.Object, error) {
	obj, gvk, err := strictDecoder.Decode(doc, nil, nil)
	if err != nil {
		// A strict-decoding error comes with a decoded object; it is still
		// an error here.
		return nil, fmt.Errorf("strict decode: %w", err)
	}
	if gvk == nil || gvk.Kind == "" || gvk.Version == "" {
		return nil, errors.New("strict decode: apiVersion and kind are required")
	}
	return obj, nil
}

// splitDocuments splits a YAML stream on "---" lines, dropping documents
// that hold only comments or whitespace.
func splitDocuments(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("splitting YAML documents: %w", err)
		}
		if hasContent(doc) {
			docs = append(docs, doc)
		}
	}
}

func hasContent(doc []byte) bool {
	for line := range strings.SplitSeq(string(doc), "\n") {
		t := strings.TrimSpace(line)
		if t != "" && !strings.HasPrefix(t, "#") && t != "---" {
			return true
		}
	}
	return false
}

// decodeFile decodes every document of one manifest file.
func decodeFile(fsys fs.FS, name string) ([]object, error) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	docs, err := splitDocuments(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s: no YAML document", name)
	}
	var objs []object
	var errs []error
	for i, doc := range docs {
		obj, err := decodeDocument(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (document %d): %w", name, i+1, err))
			continue
		}
		o := object{file: name, index: i, obj: obj, kind: obj.GetObjectKind().GroupVersionKind().Kind}
		if m, ok := obj.(interface {
			GetNamespace() string
			GetName() string
		}); ok {
			o.ns, o.name = m.GetNamespace(), m.GetName()
		}
		objs = append(objs, o)
	}
	return objs, errors.Join(errs...)
}

// kustomization is the part of kustomize's Kustomization these manifests
// use: resources only. Anything else (namePrefix, namespace, labels,
// patches, images, generators) would change what is applied, and the
// invariants are checked on the files as written, so it is refused until
// this test learns to apply it.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
}

// checkKustomization decodes dir's kustomization.yaml strictly and checks
// that it lists exactly the manifest files and kustomization directories
// beside it. It returns the subdirectories it lists.
func checkKustomization(fsys fs.FS, dir string) ([]string, error) {
	file := path.Join(dir, kustomizationFile)
	data, err := fs.ReadFile(fsys, file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (every manifest directory needs one)", dir, err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		return nil, fmt.Errorf("%s: %w (only apiVersion, kind and resources are supported: the checks read the files as written)", file, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		return nil, fmt.Errorf("%s: apiVersion/kind %q/%q, want kustomize.config.k8s.io/v1beta1/Kustomization", file, k.APIVersion, k.Kind)
	}
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	present := map[string]bool{}
	var subdirs []string
	for _, e := range entries {
		switch {
		case e.IsDir():
			present[e.Name()] = true
			subdirs = append(subdirs, e.Name())
		case e.Name() == kustomizationFile:
		case isManifest(e.Name()):
			present[e.Name()] = true
		}
	}
	var errs []error
	listed := map[string]bool{}
	for _, r := range k.Resources {
		clean := path.Clean(r)
		switch {
		case listed[clean]:
			errs = append(errs, fmt.Errorf("%s: resource %q listed twice", file, r))
		case strings.Contains(clean, "/") || clean == "..":
			errs = append(errs, fmt.Errorf("%s: resource %q is not in this directory; list files beside kustomization.yaml, or a subdirectory with its own", file, r))
		case !present[clean]:
			errs = append(errs, fmt.Errorf("%s: resource %q does not exist", file, r))
		}
		listed[clean] = true
	}
	for name := range present {
		if !listed[name] {
			errs = append(errs, fmt.Errorf("%s: %q is present but not listed in resources, so `kubectl apply -k` would skip it", file, name))
		}
	}
	slices.Sort(subdirs)
	return subdirs, errors.Join(errs...)
}

func isManifest(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

// loadTree checks the kustomization in dir and every one below it, and
// decodes every manifest file it lists. Problems are collected, not
// stopped at.
func loadTree(fsys fs.FS, dir string) (objs []object, errs []error) {
	subdirs, err := checkKustomization(fsys, dir)
	if err != nil {
		errs = append(errs, err)
	}
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, append(errs, fmt.Errorf("%s: %w", dir, err))
	}
	for _, e := range entries {
		if e.IsDir() || e.Name() == kustomizationFile || !isManifest(e.Name()) {
			continue
		}
		o, err := decodeFile(fsys, path.Join(dir, e.Name()))
		objs = append(objs, o...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, sub := range subdirs {
		o, e := loadTree(fsys, path.Join(dir, sub))
		objs, errs = append(objs, o...), append(errs, e...)
	}
	return objs, errs
}

// load reads and decodes the manifests under base/.
func load(fsys fs.FS) (*manifests, []error) {
	var errs []error
	if _, err := fs.Stat(fsys, overlaysDir); err == nil {
		errs = append(errs, fmt.Errorf("%s/ exists, but the checks apply no patches or transformers yet: extend load_test.go before adding overlays", overlaysDir))
	}
	objs, e := loadTree(fsys, baseDir)
	return &manifests{objects: objs}, append(errs, e...)
}
