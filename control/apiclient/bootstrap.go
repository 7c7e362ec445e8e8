package apiclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/causeway-mesh/causeway/control/ca/bootstrap"
)

// CreateBootstrapToken asks the control plane for a bootstrap token
// (POST /api/v1/bootstrap-tokens): a secret a sidecar of req.Service
// presents once to obtain its first mesh certificate. The token is in the
// response only; the control plane keeps its hash. Only a control plane
// run with --tls issues tokens; any other answers 404, which the error
// explains.
func (c *Client) CreateBootstrapToken(ctx context.Context, req bootstrap.CreateRequest) (*bootstrap.CreateResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	out := new(bootstrap.CreateResponse)
	if _, err := c.do(ctx, http.MethodPost, bootstrap.Path, nil, body, out); err != nil {
		var e *Error
		if errors.As(err, &e) && e.Status == http.StatusNotFound {
			e.hint = "the control plane issues bootstrap tokens only when it runs with --tls"
		}
		return nil, err
	}
	if out.Token == "" {
		return nil, fmt.Errorf("the control plane at %s answered without a token", c.Server)
	}
	return out, nil
}
