package proxy

import (
	"encoding/xml"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/examples/echo/echoserver"
	"github.com/causeway-mesh/causeway/proxy/config"
)

// h2specKnownFailures are the h2spec cases the inbound listener may fail,
// each harmless (README.md, "HTTP/2 conformance"):
var h2specKnownFailures = map[string]string{
	// A bad preface is not HTTP/2, so the listener reads it as HTTP/1.1 and
	// answers 400 before closing.
	"http2/3.5|Sends invalid connection preface": "answered as HTTP/1.1 (400) then closed",
	// Duplicate SETTINGS entries: x/net/http2 closes the connection (an
	// anti-abuse choice, CVE-2019-9515 class).
	"http2/6.5.3|Sends multiple values of SETTINGS_INITIAL_WINDOW_SIZE": "connection closed by design",
	// Connection-specific headers / bad TE: the stream gets an HTTP 400
	// response instead of RST_STREAM; the request never reaches the app.
	"http2/8.1.2.2|Sends a HEADERS frame that contains the connection-specific header field":                       "400 instead of RST_STREAM",
	"http2/8.1.2.2|Sends a HEADERS frame that contains the TE header field with any value other than \"trailers\"": "400 instead of RST_STREAM",
	// A HEADERS frame above 16 KiB is legal when the server advertises a
	// larger frame size; h2spec assumes the default.
	"http2/4.2|Sends a HEADERS frame that exceeds SETTINGS_MAX_FRAME_SIZE": "frame size depends on settings",
}

type h2specReport struct {
	Suites []struct {
		Package string `xml:"package,attr"`
		Cases   []struct {
			Name    string    `xml:"classname,attr"`
			Failure *struct{} `xml:"failure"`
			Error   *struct{} `xml:"error"`
			Skipped *struct{} `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// TestH2Spec runs h2spec (pinned as a go tool in go.mod) against the
// inbound listener: at least 139 of 145 cases must pass and only the known,
// harmless cases may fail.
func TestH2Spec(t *testing.T) {
	if testing.Short() {
		t.Skip("h2spec takes ~20s; skipped with -short")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build h2spec: %v", err)
	}
	h2spec := filepath.Join(t.TempDir(), "h2spec")
	build := exec.Command(goBin, "build", "-o", h2spec, "github.com/summerwind/h2spec/cmd/h2spec")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building h2spec: %v\n%s", err, out)
	}
	app := startApp(t, echoserver.Handler("h2spec"))
	s := startSidecar(t, testConfig("echo", app, config.ProtocolHTTP1))
	host, port, _ := net.SplitHostPort(s.addr("inbound"))
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	ctx := testContext(t, 3*time.Minute)
	cmd := exec.CommandContext(ctx, h2spec, "-h", host, "-p", port, "-o", "3", "-j", report)
	out, _ := cmd.CombinedOutput() // exits non-zero when any case fails
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("h2spec wrote no report: %v\n%s", err, out)
	}
	var r h2specReport
	if err := xml.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	total, passed := 0, 0
	var unexpected []string
	for _, s := range r.Suites {
		for _, c := range s.Cases {
			total++
			switch {
			case c.Skipped != nil:
			case c.Failure == nil && c.Error == nil:
				passed++
			default:
				key := s.Package + "|" + c.Name
				if why, ok := h2specKnownFailures[key]; ok {
					t.Logf("known failure %s (%s)", key, why)
				} else {
					unexpected = append(unexpected, key)
				}
			}
		}
	}
	t.Logf("h2spec: %d of %d passed", passed, total)
	if len(unexpected) > 0 {
		t.Errorf("unexpected h2spec failures:\n  %s\n%s", strings.Join(unexpected, "\n  "), out)
	}
	if total < 145 || passed < 139 {
		t.Errorf("h2spec: %d of %d passed, want at least 139 of 145", passed, total)
	}
}
