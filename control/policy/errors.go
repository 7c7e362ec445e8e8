package policy

import (
	"fmt"
	"strings"
)

// Code is a stable, machine-readable error code. The values follow the
// names Kubernetes uses for field errors, so tooling that knows those
// knows these.
type Code string

// Error codes.
const (
	CodeRequired     Code = "FieldValueRequired"     // a required field is absent or empty
	CodeInvalid      Code = "FieldValueInvalid"      // the value is out of range or malformed
	CodeNotSupported Code = "FieldValueNotSupported" // the value is not one of the allowed values
	CodeDuplicate    Code = "FieldValueDuplicate"    // the value repeats one that must be unique
	CodeForbidden    Code = "FieldValueForbidden"    // the field must not be set here
	CodeTypeInvalid  Code = "FieldValueTypeInvalid"  // the value has the wrong type (a string for a number, ...)
	CodeUnknownField Code = "FieldValueUnknown"      // the key is not a field of this object
	CodeSyntax       Code = "YAMLSyntaxInvalid"      // the document is not valid YAML or JSON
)

// FieldError is one problem with one field. Field is a path such as
// "spec.rules[0].backendRefs[1].weight"; it is empty for a problem with
// the whole document.
type FieldError struct {
	Field   string `json:"field"`
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", e.Code, e.Message)
	}
	return fmt.Sprintf("%s: %s: %s", e.Field, e.Code, e.Message)
}

// ErrorList is every problem found in one resource, in document order.
type ErrorList []*FieldError

func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// OrNil returns l as an error, or nil when it is empty.
func (l ErrorList) OrNil() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

func (l *ErrorList) add(field string, code Code, format string, args ...any) {
	*l = append(*l, &FieldError{Field: field, Code: code, Message: fmt.Sprintf(format, args...)})
}

// DocumentError is an ErrorList for one document of a multi-document
// stream. Index counts from 0; Ref names the resource when its kind and
// name could be read ("HTTPRoute default/inventory-canary").
type DocumentError struct {
	Index int
	Ref   string
	Errs  ErrorList
}

func (e *DocumentError) Error() string {
	where := fmt.Sprintf("document %d", e.Index+1)
	if e.Ref != "" {
		where += " (" + e.Ref + ")"
	}
	return where + ": " + e.Errs.Error()
}

// Unwrap gives errors.As access to the ErrorList.
func (e *DocumentError) Unwrap() error { return e.Errs }
