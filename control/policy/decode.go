package policy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Decode parses one YAML or JSON document into a validated Resource.
// Decoding is strict: an unknown or misspelt key (case included), a
// duplicate key or a value of the wrong type is an error, and every
// problem is reported as a FieldError with its path. The returned error,
// if any, is an ErrorList.
func Decode(doc []byte) (*Resource, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, ErrorList{{Code: CodeSyntax, Message: cleanDecodeError(err)}}
	}
	return decodeJSON(js)
}

// DecodeAll parses a stream of YAML documents separated by "---" lines.
// Empty documents are skipped. On failure it returns the resources that
// decoded and a joined error of *DocumentError values, one per bad
// document.
func DecodeAll(data []byte) ([]*Resource, error) {
	var (
		out  []*Resource
		errs []error
	)
	for i, doc := range SplitDocuments(data) {
		r, err := Decode(doc)
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) {
				list = ErrorList{{Code: CodeInvalid, Message: err.Error()}}
			}
			errs = append(errs, &DocumentError{Index: i, Ref: refOf(doc), Errs: list})
			continue
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

// refOf names a document's resource for an error message, best effort.
func refOf(doc []byte) string {
	var head struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if yaml.Unmarshal(doc, &head) != nil || head.Kind == "" || head.Metadata.Name == "" {
		return ""
	}
	ns := head.Metadata.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	return head.Kind + " " + ns + "/" + head.Metadata.Name
}

// SplitDocuments splits a YAML stream at "---" separator lines and drops
// documents that hold only comments and blank lines.
func SplitDocuments(data []byte) [][]byte {
	var (
		docs [][]byte
		cur  bytes.Buffer
	)
	flush := func() {
		if hasContent(cur.Bytes()) {
			docs = append(docs, slices.Clone(cur.Bytes()))
		}
		cur.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), len(data)+1)
	for sc.Scan() {
		line := sc.Text()
		t := strings.TrimRight(line, " \t\r")
		if t == "---" || strings.HasPrefix(t, "--- ") || strings.HasPrefix(t, "---\t") {
			flush()
			continue
		}
		if t == "..." {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return docs
}

func hasContent(doc []byte) bool {
	for line := range strings.SplitSeq(string(doc), "\n") {
		t := strings.TrimSpace(line)
		if t != "" && !strings.HasPrefix(t, "#") {
			return true
		}
	}
	return false
}

// envelope is the shape of a document before its kind is known.
type envelope struct {
	APIVersion string          `json:"apiVersion"`
	Kind       Kind            `json:"kind"`
	Metadata   Metadata        `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

// DecodeJSON parses a resource from JSON, as the API receives it, with
// the same strictness and validation as Decode.
func DecodeJSON(js []byte) (*Resource, error) { return decodeJSON(js) }

func decodeJSON(js []byte) (*Resource, error) {
	var raw any
	if err := json.Unmarshal(js, &raw); err != nil {
		return nil, ErrorList{{Code: CodeSyntax, Message: cleanDecodeError(err)}}
	}
	obj, ok := raw.(map[string]any)
	if !ok {
		return nil, ErrorList{{Code: CodeTypeInvalid, Message: "a resource is an object with apiVersion, kind, metadata and spec"}}
	}
	var errs ErrorList
	checkShape(obj, reflect.TypeFor[envelope](), "", &errs)
	if len(errs) > 0 {
		return nil, errs
	}
	var env envelope
	if err := strictUnmarshal(js, &env); err != nil {
		return nil, ErrorList{{Code: CodeInvalid, Message: err.Error()}}
	}
	r := &Resource{APIVersion: env.APIVersion, Kind: env.Kind, Metadata: env.Metadata, Spec: env.Spec}
	if errs := validateEnvelope(r); len(errs) > 0 {
		return nil, errs
	}
	var specType reflect.Type
	var target any
	switch r.Kind {
	case KindHTTPRoute:
		r.HTTPRoute = new(HTTPRouteSpec)
		specType, target = reflect.TypeFor[HTTPRouteSpec](), r.HTTPRoute
	case KindBackendPolicy:
		r.BackendPolicy = new(BackendPolicySpec)
		specType, target = reflect.TypeFor[BackendPolicySpec](), r.BackendPolicy
	case KindFencingPolicy:
		r.FencingPolicy = new(FencingPolicySpec)
		specType, target = reflect.TypeFor[FencingPolicySpec](), r.FencingPolicy
	case KindAuthorizationPolicy:
		r.AuthorizationPolicy = new(AuthorizationPolicySpec)
		specType, target = reflect.TypeFor[AuthorizationPolicySpec](), r.AuthorizationPolicy
	}
	checkShape(obj["spec"], specType, "spec", &errs)
	if len(errs) > 0 {
		return nil, errs
	}
	if err := strictUnmarshal(r.Spec, target); err != nil {
		return nil, ErrorList{{Field: "spec", Code: CodeInvalid, Message: err.Error()}}
	}
	// Store the spec in its canonical compact form.
	canon, err := json.Marshal(target)
	if err != nil {
		return nil, fmt.Errorf("re-encode spec: %w", err)
	}
	r.Spec = canon
	if errs := Validate(r); len(errs) > 0 {
		return nil, errs
	}
	return r, nil
}

func strictUnmarshal(js []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errors.New(cleanDecodeError(err))
	}
	return nil
}

func cleanDecodeError(err error) string {
	msg := err.Error()
	for _, p := range []string{"error converting YAML to JSON: ", "error unmarshaling JSON: ", "while decoding JSON: ", "json: ", "yaml: "} {
		msg = strings.ReplaceAll(msg, p, "")
	}
	return msg
}

var (
	rawMessageType  = reflect.TypeFor[json.RawMessage]()
	durationType    = reflect.TypeFor[Duration]()
	fencingModeType = reflect.TypeFor[FencingMode]()
	timeType        = reflect.TypeFor[time.Time]()
)

// checkShape walks decoded JSON against the Go type it will be decoded
// into and records every unknown key (exact, case-sensitive match) and
// every value of the wrong JSON type, with its full path. encoding/json
// alone matches keys case-insensitively and reports type errors without
// list indices.
func checkShape(v any, t reflect.Type, path string, errs *ErrorList) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if v == nil {
		return // null: the field stays unset
	}
	typeErr := func(want string) {
		errs.add(path, CodeTypeInvalid, "want %s, got %s", want, jsonKind(v))
	}
	switch t {
	case rawMessageType:
		return
	case durationType:
		if _, ok := v.(string); !ok {
			typeErr(`a duration string such as "2s"`)
		}
		return
	case fencingModeType:
		switch v.(type) {
		case string, bool:
		default:
			typeErr(`"on" or "off"`)
		}
		return
	case timeType:
		if _, ok := v.(string); !ok {
			typeErr("an RFC 3339 time")
		}
		return
	}
	join := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			typeErr("an object")
			return
		}
		fields := map[string]reflect.Type{}
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		for _, k := range sortedKeys(m) {
			ft, ok := fields[k]
			if !ok {
				msg := "unknown field"
				for name := range fields {
					if strings.EqualFold(name, k) {
						msg = fmt.Sprintf("unknown field (did you mean %q?)", name)
					}
				}
				errs.add(join(k), CodeUnknownField, "%s", msg)
				continue
			}
			checkShape(m[k], ft, join(k), errs)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			typeErr("an object")
			return
		}
		for _, k := range sortedKeys(m) {
			checkShape(m[k], t.Elem(), join(k), errs)
		}
	case reflect.Slice:
		s, ok := v.([]any)
		if !ok {
			typeErr("a list")
			return
		}
		for i, e := range s {
			checkShape(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			typeErr("a string")
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			typeErr("a boolean")
		}
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint32, reflect.Uint64:
		f, ok := v.(float64)
		if !ok {
			typeErr("an integer")
		} else if f != float64(int64(f)) {
			errs.add(path, CodeTypeInvalid, "want an integer, got %v", f)
		}
	case reflect.Float64:
		if _, ok := v.(float64); !ok {
			typeErr("a number")
		}
	}
}

func jsonKind(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("string %q", v)
	case float64:
		return fmt.Sprintf("number %v", v)
	case bool:
		return fmt.Sprintf("boolean %v", v)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Load decodes a resource that was validated when it was stored: the
// envelope and the typed spec, without the strict checks, so that a
// stricter rule added later never makes stored policy unreadable.
func Load(js []byte) (*Resource, error) {
	var env envelope
	if err := json.Unmarshal(js, &env); err != nil {
		return nil, fmt.Errorf("stored resource: %w", err)
	}
	r := &Resource{APIVersion: env.APIVersion, Kind: env.Kind, Metadata: env.Metadata, Spec: env.Spec}
	var target any
	switch r.Kind {
	case KindHTTPRoute:
		r.HTTPRoute = new(HTTPRouteSpec)
		target = r.HTTPRoute
	case KindBackendPolicy:
		r.BackendPolicy = new(BackendPolicySpec)
		target = r.BackendPolicy
	case KindFencingPolicy:
		r.FencingPolicy = new(FencingPolicySpec)
		target = r.FencingPolicy
	case KindAuthorizationPolicy:
		r.AuthorizationPolicy = new(AuthorizationPolicySpec)
		target = r.AuthorizationPolicy
	default:
		return nil, fmt.Errorf("stored resource: unknown kind %q", r.Kind)
	}
	if err := json.Unmarshal(r.Spec, target); err != nil {
		return nil, fmt.Errorf("stored %s %s: spec: %w", r.Kind, r.Metadata.Name, err)
	}
	return r, nil
}
