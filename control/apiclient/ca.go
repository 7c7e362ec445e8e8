package apiclient

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/causeway-mesh/causeway/control/api"
	"github.com/causeway-mesh/causeway/control/ca/rotation"
)

// caHint explains a 404 from the CA paths.
const caHint = "the control plane is a certificate authority only when it runs with --tls"

// CAStatus reads the CA's roots, rotation stage and the sidecars' view of
// them (GET /api/v1/ca).
func (c *Client) CAStatus(ctx context.Context) (*rotation.Status, error) {
	out := new(rotation.Status)
	if _, err := c.do(ctx, http.MethodGet, "/api/v1/ca", nil, nil, out); err != nil {
		return nil, caError(err)
	}
	return out, nil
}

// RotateCA runs one step of a CA root rotation (POST /api/v1/ca/rotate):
// "prepare", "activate" or "prune". Without force, a step the mesh is not
// ready for fails with a 409 (NotReady) whose message says what is
// missing; the status after a successful step is returned.
func (c *Client) RotateCA(ctx context.Context, stage string, force bool) (*rotation.Status, error) {
	body, err := json.Marshal(api.RotateRequest{Stage: stage, Force: force})
	if err != nil {
		return nil, err
	}
	out := new(rotation.Status)
	if _, err := c.do(ctx, http.MethodPost, "/api/v1/ca/rotate", nil, body, out); err != nil {
		var e *Error
		if errors.As(err, &e) && e.Body.Code == "NotReady" && !force {
			e.hint = "wait (meshctl ca status shows what is missing), or run the step with --force"
		}
		return nil, caError(err)
	}
	return out, nil
}

// caError replaces the generic hints of the CA paths' errors.
func caError(err error) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	switch {
	case e.Status == http.StatusNotFound:
		e.hint = caHint
	case e.Status == http.StatusConflict && e.Body.Code == "Conflict":
		e.hint = "a rotation runs prepare, activate, prune, in that order (meshctl ca status shows the stage)"
	}
	return err
}
