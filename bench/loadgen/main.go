// Command loadgen is Causeway's HTTP/1.1 keep-alive load generator.
//
//	loadgen -url http://127.0.0.1:9000/ -rate 1000 -duration 20s -warmup 2s -conns 16
//	loadgen -url http://127.0.0.1:9000/ -conns 50 -duration 10s          (closed loop)
//	loadgen -mode probe -url http://127.0.0.1:9000/ -expect-body 'Hello, World!' -timeout 10s
//
// Open loop (-rate > 0) follows a global fixed-rate schedule, wrk2 style, and
// records svc (send -> done) and co (intended send -> done, corrected for
// coordinated omission). Closed loop keeps every connection busy back to
// back. The result is one JSON object on stdout (or -out).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/causeway-mesh/causeway/bench/loadgen/lg"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		mode       = flag.String("mode", "", "open, closed or probe (default: open if -rate > 0, else closed)")
		rawURL     = flag.String("url", "", "target URL, http://127.0.0.1:PORT/path")
		host       = flag.String("host", "", "Host header override (e.g. a service name for the sidecar's outbound port)")
		bodySize   = flag.Int("body-size", 0, "send a POST with a body of this many bytes (0 = GET)")
		rate       = flag.Float64("rate", 0, "open loop: requests per second over all connections")
		duration   = flag.Duration("duration", 10*time.Second, "measured duration")
		warmup     = flag.Duration("warmup", time.Second, "unrecorded load before the measured window")
		grace      = flag.Duration("grace", 2*time.Second, "time allowed after the schedule for in-flight requests")
		conns      = flag.Int("conns", 16, "keep-alive connections")
		client     = flag.String("client", "raw", "HTTP client: raw (minimal HTTP/1.1 over TCP) or nethttp")
		pacer      = flag.String("pacer", "timerfd", "open-loop pacing: timerfd, nanosleep or gosleep")
		spin       = flag.Duration("spin", 0, "open loop: wake this much early and busy-wait the rest")
		out        = flag.String("out", "", "write the JSON result here instead of stdout")
		expectBody = flag.String("expect-body", "", "probe: require this exact body")
		timeout    = flag.Duration("timeout", 10*time.Second, "probe: give up after this long")
		remote     = flag.Bool("allow-non-loopback", false, "allow a target that is not a loopback address")
	)
	flag.Parse()
	if *rawURL == "" {
		return fmt.Errorf("-url is required")
	}
	var body []byte
	if *bodySize > 0 {
		if *bodySize > 1<<20 {
			return fmt.Errorf("-body-size is limited to 1 MiB")
		}
		body = bytes.Repeat([]byte("x"), *bodySize)
	}
	t, err := lg.ParseTarget(*rawURL, *host, body)
	if err != nil {
		return err
	}
	if !*remote && !isLoopback(t.URL.Hostname()) {
		return fmt.Errorf("target %q is not a loopback address (use -allow-non-loopback to override)", t.URL.Hostname())
	}
	if *mode == "" {
		*mode = "closed"
		if *rate > 0 {
			*mode = "open"
		}
	}
	switch *mode {
	case "probe":
		return lg.Probe(t, *expectBody, *timeout)
	case "open":
		if *rate <= 0 {
			return fmt.Errorf("open loop needs -rate > 0")
		}
	case "closed":
		*rate = 0
	default:
		return fmt.Errorf("unknown -mode %q", *mode)
	}
	res, err := lg.Run(lg.Config{
		Target:   t,
		Client:   lg.ClientKind(*client),
		Conns:    *conns,
		Rate:     *rate,
		Duration: *duration,
		Warmup:   *warmup,
		Grace:    *grace,
		Pacer:    lg.PacerKind(*pacer),
		Spin:     *spin,
	})
	if err != nil {
		return err
	}
	js, err := json.Marshal(res)
	if err != nil {
		return err
	}
	js = append(js, '\n')
	if *out != "" {
		return os.WriteFile(*out, js, 0o644)
	}
	_, err = os.Stdout.Write(js)
	return err
}

func isLoopback(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
