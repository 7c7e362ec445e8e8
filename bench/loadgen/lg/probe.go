package lg

import (
	"fmt"
	"io"
	"net/http"
	"time"
)

func probe(t Target, expectBody string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var last error
	for attempt := 0; ; attempt++ {
		last = probeOnce(client, t, expectBody)
		if last == nil {
			return nil
		}
		if time.Now().Add(100 * time.Millisecond).After(deadline) {
			return fmt.Errorf("not ready after %v (%d attempts): %w", timeout, attempt+1, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func probeOnce(client *http.Client, t Target, expectBody string) error {
	req, err := http.NewRequest(http.MethodGet, t.URL.String(), nil)
	if err != nil {
		return err
	}
	if t.Host != "" {
		req.Host = t.Host
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d, body %.200q", resp.StatusCode, body)
	}
	if expectBody != "" && string(body) != expectBody {
		return fmt.Errorf("unexpected body %.200q (want %q)", body, expectBody)
	}
	return nil
}
