// Package apiclient is a Go client of the control plane's HTTP API (see
// package api for the paths). meshctl is built on it.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/causeway-mesh/causeway/control/api"
	"github.com/causeway-mesh/causeway/control/policy"
	"github.com/causeway-mesh/causeway/control/xds"
)

// Client calls one control plane.
type Client struct {
	// Server is the API's base URL, such as http://127.0.0.1:18080, or
	// https://cp.example:18080 for a control plane run with --tls (see
	// TrustCAFile).
	Server string
	// Token is the bearer token.
	Token string
	// HTTP is the client used; nil means http.DefaultClient.
	// TrustCAFile sets one that verifies the server against a CA file.
	HTTP *http.Client
	// TokenHint says where the token comes from, for the 401 message
	// ("the token is in DATA_DIR/api-token").
	TokenHint string

	caFile string // set by TrustCAFile, for error messages
}

// Error is an error response from the API.
type Error struct {
	Status int
	// Body is the API's error body.
	Body api.Error
	hint string
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s: %s", e.Status, e.Body.Code, e.Body.Message)
	for _, d := range e.Body.Details {
		fmt.Fprintf(&b, "\n  %s", d.Error())
	}
	if e.hint != "" {
		b.WriteString("\n" + e.hint)
	}
	return b.String()
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, body []byte, out any) (int, error) {
	u := strings.TrimRight(c.Server, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, fmt.Errorf("bad server URL %q: %w (set --server or MESH_SERVER)", c.Server, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return 0, c.reachError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("reading the response from %s: %w", c.Server, err)
	}
	if resp.StatusCode >= 300 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(data, &e.Body) != nil || e.Body.Code == "" {
			e.Body.Code, e.Body.Message = http.StatusText(resp.StatusCode), strings.TrimSpace(string(data))
		}
		switch resp.StatusCode {
		case http.StatusUnauthorized:
			hint := "the token is in DATA_DIR/api-token"
			if c.TokenHint != "" {
				hint = c.TokenHint
			}
			e.hint = "set --token or MESH_TOKEN (" + hint + "), or --data-dir DATA_DIR on the control plane's host"
		case http.StatusBadRequest:
			if strings.Contains(string(data), plaintextToTLS) {
				e.hint = "the control plane serves TLS: use an https:// --server URL (and --ca-file DATA_DIR/ca-bundle.pem)"
			}
		case http.StatusConflict:
			if e.Body.Code == "Conflict" {
				e.hint = "someone changed the resource since you read it: get it again, re-apply your change"
			}
		}
		return resp.StatusCode, e
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decoding the response from %s: %w", c.Server, err)
		}
	}
	return resp.StatusCode, nil
}

func resourcePath(kind policy.Kind, name string) string {
	p := "/api/v1/resources/" + url.PathEscape(string(kind))
	if name != "" {
		p += "/" + url.PathEscape(name)
	}
	return p
}

func nsQuery(ns string) url.Values {
	if ns == "" {
		return nil
	}
	return url.Values{"namespace": {ns}}
}

// Apply creates or updates r (PUT). created reports which.
func (c *Client) Apply(ctx context.Context, r *policy.Resource) (stored *policy.Resource, created bool, err error) {
	body, err := json.Marshal(r)
	if err != nil {
		return nil, false, err
	}
	stored = new(policy.Resource)
	status, err := c.do(ctx, http.MethodPut, resourcePath(r.Kind, r.Metadata.Name), nsQuery(r.Metadata.Namespace), body, stored)
	if err != nil {
		return nil, false, err
	}
	return stored, status == http.StatusCreated, nil
}

// Get reads one resource.
func (c *Client) Get(ctx context.Context, kind policy.Kind, namespace, name string) (*policy.Resource, error) {
	r := new(policy.Resource)
	_, err := c.do(ctx, http.MethodGet, resourcePath(kind, name), nsQuery(namespace), nil, r)
	return r, err
}

// List reads every resource of kind (all kinds when empty) in namespace
// (all when empty).
func (c *Client) List(ctx context.Context, kind policy.Kind, namespace string) ([]*policy.Resource, error) {
	var l api.List
	path := "/api/v1/resources"
	if kind != "" {
		path = resourcePath(kind, "")
	}
	_, err := c.do(ctx, http.MethodGet, path, nsQuery(namespace), nil, &l)
	return l.Items, err
}

// Delete removes one resource.
func (c *Client) Delete(ctx context.Context, kind policy.Kind, namespace, name string) error {
	_, err := c.do(ctx, http.MethodDelete, resourcePath(kind, name), nsQuery(namespace), nil, nil)
	return err
}

// ProxiesResponse is the body of GET /api/v1/proxies.
type ProxiesResponse struct {
	Proxies []xds.ProxyStatus `json:"proxies"`
	Build   xds.BuildStatus   `json:"build"`
}

// Proxies reads every proxy's status.
func (c *Client) Proxies(ctx context.Context) (*ProxiesResponse, error) {
	out := new(ProxiesResponse)
	_, err := c.do(ctx, http.MethodGet, "/api/v1/proxies", nil, nil, out)
	return out, err
}

// ProxyConfig reads what one proxy was given.
func (c *Client) ProxyConfig(ctx context.Context, node string) (*api.ProxyConfig, error) {
	out := new(api.ProxyConfig)
	_, err := c.do(ctx, http.MethodGet, "/api/v1/proxies/"+url.PathEscape(node)+"/config", nil, nil, out)
	return out, err
}

// Members reads the gossip membership.
func (c *Client) Members(ctx context.Context) (*api.Members, error) {
	out := new(api.Members)
	_, err := c.do(ctx, http.MethodGet, "/api/v1/members", nil, nil, out)
	return out, err
}

// IsNotFound reports whether err is a 404 from the API.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}
