// Package healthprobe is the `healthcheck` subcommand the daemons share:
// it asks a local HTTP listener whether the process is healthy, for
// container HEALTHCHECKs and startup probes.
package healthprobe

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Get requests path from the listener bound at addr (an unspecified or
// empty host means this machine, 127.0.0.1) and returns nil on 200, else
// an error carrying the start of the answer.
func Get(addr, path string, timeout time.Duration) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	client := &http.Client{Timeout: timeout}
	resp, err := client.Get("http://" + net.JoinHostPort(host, port) + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s %s", resp.Status, body)
	}
	return nil
}
