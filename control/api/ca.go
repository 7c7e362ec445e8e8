package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/causeway-mesh/causeway/control/ca"
	"github.com/causeway-mesh/causeway/control/ca/rotation"
)

// CA is the control plane's certificate authority as the API sees it
// (*rotation.Rotator).
type CA interface {
	// Status reports the roots, the rotation stage and the fleet.
	Status() rotation.Status
	// Rotate runs one rotation step (see package rotation for the errors).
	Rotate(action rotation.Action, force bool) (rotation.Status, error)
}

// RotateRequest is the body of POST /api/v1/ca/rotate.
type RotateRequest struct {
	// Stage is "prepare", "activate" or "prune".
	Stage string `json:"stage"`
	// Force runs the stage even when the mesh is not ready for it.
	Force bool `json:"force,omitempty"`
}

// mountCA registers the CA paths: with a CA, its status and rotation; without
// one (no --tls), answers saying so.
func (h *Handler) mountCA(api func(string, http.HandlerFunc)) {
	if h.cfg.CA == nil {
		noCA := func(w http.ResponseWriter, _ *http.Request) {
			writeError(w, http.StatusNotFound, "NotFound", "this control plane is not a certificate authority: it is one only when it runs with --tls", nil)
		}
		api("GET /api/v1/ca", noCA)
		api("POST /api/v1/ca/rotate", noCA)
		return
	}
	api("GET /api/v1/ca", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, h.cfg.CA.Status())
	})
	api("POST /api/v1/ca/rotate", h.caRotate)
}

func (h *Handler) caRotate(w http.ResponseWriter, r *http.Request) {
	var req RotateRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "BadRequest", `body: want {"stage": "prepare"|"activate"|"prune", "force": false}: `+err.Error(), nil)
		return
	}
	if err := dec.Decode(new(json.RawMessage)); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "BadRequest", "body: more than one JSON value", nil)
		return
	}
	action, err := rotation.ParseAction(req.Stage)
	if err != nil {
		writeError(w, http.StatusBadRequest, "BadRequest", err.Error(), nil)
		return
	}
	st, err := h.cfg.CA.Rotate(action, req.Force)
	switch {
	case err == nil:
		h.cfg.Logger.Info("CA rotation step", "stage", action, "force", req.Force, "now", st.Stage)
		writeJSON(w, http.StatusOK, st)
	case errors.Is(err, ca.ErrOperatorManaged):
		writeError(w, http.StatusConflict, "OperatorManaged", fmt.Sprintf("%v: the CA's certificate, key and bundle are the operator's files", err), nil)
	case errors.Is(err, ca.ErrStage):
		writeError(w, http.StatusConflict, "Conflict", err.Error(), nil)
	case errors.Is(err, rotation.ErrNotReady):
		writeError(w, http.StatusConflict, "NotReady", err.Error(), nil)
	default:
		h.internal(w, err)
	}
}
