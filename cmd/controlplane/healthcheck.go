package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/causeway-mesh/causeway/control/ca"
	"github.com/causeway-mesh/causeway/control/plane"
	"github.com/causeway-mesh/causeway/internal/healthprobe"
)

// defaultHealthTimeout bounds one healthcheck.
const defaultHealthTimeout = 2 * time.Second

// healthcheck exits 0 when the control plane's /healthz answers 200, 1 when
// it does not (with the reason on stderr), 2 on a bad configuration.
//
// It reads the server's own configuration, with the server's precedence:
// flags, then MESH_* variables, then the --config file (MESH_CONFIG), then
// the defaults. A container HEALTHCHECK, which runs with the server's
// environment, so probes the listener the way the server serves it: the
// API address (--api, MESH_API), and with --tls (MESH_TLS=true) over HTTPS,
// verifying the server against DATA_DIR/ca-bundle.pem (--data-dir,
// MESH_DATA_DIR; default ./causeway-data as for the server) or --ca-file
// (MESH_CA_FILE), for the name the serving certificate carries
// (127.0.0.1 unless --tls-host names others). Its own flags: --timeout
// (default 2s) and --ca-file.
func healthcheck(args []string, env func(string) (string, bool), stderr io.Writer) int {
	var (
		timeout time.Duration
		caFile  string
	)
	cfg, err := plane.LoadWith(args, env, stderr, func(fs *pflag.FlagSet) {
		fs.DurationVar(&timeout, "timeout", defaultHealthTimeout, "healthcheck: give up after this long")
		fs.StringVar(&caFile, "ca-file", "", "healthcheck with --tls: PEM roots to verify the control plane with (default DATA_DIR/"+plane.BundleFile+")")
	})
	if errors.Is(err, plane.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "controlplane healthcheck: invalid configuration:", err)
		return 2
	}
	if timeout <= 0 {
		fmt.Fprintln(stderr, "controlplane healthcheck: --timeout must be positive")
		return 2
	}
	if err := probe(cfg, caFile, timeout); err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	return 0
}

// probe asks the API listener of cfg for /healthz.
func probe(cfg *plane.Config, caFile string, timeout time.Duration) error {
	if !cfg.TLS.Enabled {
		err := healthprobe.Get(cfg.API, "/healthz", timeout)
		if err != nil && strings.Contains(err.Error(), "HTTP request to an HTTPS server") {
			return fmt.Errorf("%w\nthe control plane serves TLS: run the healthcheck with --tls (or MESH_TLS=true), as the server runs", err)
		}
		return err
	}
	host, port, err := net.SplitHostPort(cfg.API)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	if caFile == "" {
		caFile = filepath.Join(cfg.DataDir, plane.BundleFile)
	}
	pem, err := os.ReadFile(caFile) //nolint:gosec // the operator's data dir or file
	if err != nil {
		return fmt.Errorf("reading the trust bundle: %w (the control plane writes DATA_DIR/%s at its first start with --tls: give the server's --data-dir, or --ca-file)", err, plane.BundleFile)
	}
	roots, err := ca.ParseBundle(pem)
	if err != nil {
		return fmt.Errorf("trust bundle %s: %w", caFile, err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	serverName := servingName(cfg.TLS.Hosts, host)
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS13},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Timeout: timeout, Transport: tr}
	url := "https://" + net.JoinHostPort(host, port) + "/healthz"
	resp, err := client.Get(url) //nolint:gosec // the operator's own API listener, from its configuration
	if err != nil {
		return explainTLS(err, caFile, serverName)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s %s", resp.Status, body)
	}
	return nil
}

// servingName is the name to verify the serving certificate for: the
// dialled host when the certificate carries it (the default names include
// 127.0.0.1 and localhost), else localhost, else the first --tls-host.
func servingName(hosts []string, dialled string) string {
	if len(hosts) == 0 || slices.Contains(hosts, dialled) {
		return dialled
	}
	if slices.Contains(hosts, "localhost") {
		return "localhost"
	}
	if h, ok := strings.CutPrefix(hosts[0], "*."); ok {
		return "healthcheck." + h
	}
	return hosts[0]
}

// explainTLS says why an HTTPS probe failed, when TLS is why.
func explainTLS(err error, caFile, serverName string) error {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		record   tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("the control plane's certificate is not signed by a root in %s (is it this control plane's %s?): %w", caFile, plane.BundleFile, err)
	case errors.As(err, &hostname):
		return fmt.Errorf("the control plane's certificate is not valid for %s: %w", serverName, err)
	case errors.As(err, &invalid):
		return fmt.Errorf("the control plane's certificate is not valid: %w", err)
	case errors.As(err, &record) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("the control plane does not serve TLS: run the healthcheck without --tls, as the server runs: %w", err)
	}
	return err
}
