package apiclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/causeway-mesh/causeway/control/ca"
)

// A control plane run with --tls serves its API over TLS with a
// certificate from the mesh's own CA, whose trust bundle it writes to
// DATA_DIR/ca-bundle.pem. The client verifies that certificate against
// the roots of TrustCAFile; there is deliberately no way to skip the
// verification.

// TrustCAFile makes the client verify an https:// server against the CA
// certificates in file (PEM, such as the control plane's
// DATA_DIR/ca-bundle.pem) instead of the system roots: the control
// plane's certificate is issued by the mesh CA, and trusting public roots
// as well would only widen whom the client believes. It replaces HTTP
// with a client of its own (no overall timeout: bound calls with their
// context). The file must hold only CA certificates; a key or anything
// else in it is an error.
func (c *Client) TrustCAFile(file string) error {
	b, err := os.ReadFile(file) //nolint:gosec // the operator names the file
	if err != nil {
		return fmt.Errorf("reading the CA file: %w", err)
	}
	roots, err := ca.ParseBundle(b)
	if err != nil {
		return fmt.Errorf("CA file %s: %w", file, err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	c.HTTP = &http.Client{Transport: tr}
	c.caFile = file
	return nil
}

// CAFile is the file TrustCAFile loaded, or "" when the client uses the
// system roots.
func (c *Client) CAFile() string { return c.caFile }

// reachError explains why the server could not be reached, with what to
// do about it: an untrusted or misnamed certificate, a server that does
// not speak TLS, or (the rest) one that is not running.
func (c *Client) reachError(err error) error {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		record   tls.RecordHeaderError
	)
	var hint string
	switch {
	case errors.As(err, &unknown) && c.caFile == "":
		hint = "the server's certificate is not trusted: pass --ca-file DATA_DIR/ca-bundle.pem (or set MESH_CA_FILE)"
	case errors.As(err, &unknown):
		hint = "the server's certificate is not signed by a root in " + c.caFile + ": is it the ca-bundle.pem of this control plane?"
	case errors.As(err, &hostname):
		hint = "the server's certificate is not valid for the host in --server"
		if names := certificateNames(hostname.Certificate); names != "" {
			hint += " (it names " + names + "; the control plane's --tls-host sets the names)"
		}
	case errors.As(err, &invalid):
		hint = "the server's certificate is not valid"
	case errors.As(err, &record) || strings.Contains(err.Error(), httpToTLS):
		hint = "the server does not speak TLS: use an http:// --server URL"
	default:
		return fmt.Errorf("cannot reach the control plane at %s: %w (is it running? set --server or MESH_SERVER)", c.Server, err)
	}
	return fmt.Errorf("cannot reach the control plane at %s: %s: %w", c.Server, hint, err)
}

// certificateNames lists the DNS names and IP addresses a certificate is
// valid for.
func certificateNames(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	names := append([]string(nil), cert.DNSNames...)
	for _, ip := range cert.IPAddresses {
		names = append(names, ip.String())
	}
	return strings.Join(names, ", ")
}

// httpToTLS is how net/http's client reports a server that answered its
// TLS handshake with plaintext HTTP (an untyped error).
const httpToTLS = "server gave HTTP response to HTTPS client"

// plaintextToTLS is what Go's (and so the control plane's) TLS server
// answers, with 400, to a request sent in plaintext.
const plaintextToTLS = "Client sent an HTTP request to an HTTPS server"
