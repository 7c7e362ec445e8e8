//go:build netns && linux

package netns

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// dialIn returns a DialContext that opens connections from inside the
// network namespace whose handle is at path. The socket is created on a
// thread moved into that namespace with setns(2); the thread is never
// moved back: its goroutine returns while still locked to it, so the
// runtime ends the thread instead of reusing it.
func dialIn(path string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			// No UnlockOSThread: the thread is in the wrong namespace now.
			f, err := os.Open(path)
			if err != nil {
				ch <- result{err: fmt.Errorf("opening namespace %s: %w", path, err)}
				return
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				ch <- result{err: fmt.Errorf("setns %s: %w", path, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// clientIn returns an HTTP client whose connections start inside the
// namespace at path. Every request is bounded by timeout.
func clientIn(path string, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:         dialIn(path),
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     30 * time.Second,
		},
	}
}
