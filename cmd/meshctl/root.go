package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/causeway-mesh/causeway/control/apiclient"
	"github.com/causeway-mesh/causeway/control/plane"
)

// DefaultServer is the API address meshctl uses without --server or
// MESH_SERVER.
const DefaultServer = "http://127.0.0.1:18080"

// globals are the flags every command shares.
type globals struct {
	server, token, dataDir, caFile, namespace, output string
	timeout                                           time.Duration
	stdout, stderr                                    io.Writer
}

// client builds the API client from the flags. The token comes from
// --token, else MESH_TOKEN (the flag's default), else DATA_DIR/api-token
// when --data-dir (or MESH_DATA_DIR) is set. An https:// server is
// verified against the roots in --ca-file (MESH_CA_FILE), else
// DATA_DIR/ca-bundle.pem when --data-dir is set and that file exists,
// else the system roots.
func (g *globals) client() (*apiclient.Client, error) {
	c := &apiclient.Client{Server: g.server, Token: g.token}
	if caFile := g.caFileFor(); caFile != "" {
		if err := c.TrustCAFile(caFile); err != nil {
			return nil, fmt.Errorf("%w (--ca-file names the control plane's DATA_DIR/%s)", err, plane.BundleFile)
		}
	}
	if c.Token == "" && g.dataDir != "" {
		path := plane.TokenPath(g.dataDir)
		b, err := os.ReadFile(path) //nolint:gosec // the operator names the directory
		if err != nil {
			return nil, fmt.Errorf("reading the token: %w (set --token or MESH_TOKEN instead)", err)
		}
		c.Token = strings.TrimSpace(string(b))
		c.TokenHint = "the token in " + path + " was refused"
	}
	return c, nil
}

// caFileFor is the CA file to verify the server with: --ca-file, else the
// trust bundle in --data-dir when it exists; "" for an http:// server,
// which has no certificate to verify.
func (g *globals) caFileFor() string {
	if !strings.HasPrefix(strings.ToLower(g.server), "https://") {
		return ""
	}
	if g.caFile != "" {
		return g.caFile
	}
	if g.dataDir == "" {
		return ""
	}
	bundle := filepath.Join(g.dataDir, plane.BundleFile)
	if _, err := os.Stat(bundle); err != nil {
		return ""
	}
	return bundle
}

func (g *globals) checkOutput(allowTable bool) error {
	switch g.output {
	case "json", "yaml":
		return nil
	case "table", "":
		if allowTable {
			return nil
		}
	}
	return fmt.Errorf("--output %q: want table, json or yaml", g.output)
}

// print writes v as JSON or YAML per --output.
func (g *globals) print(v any) error {
	js, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if g.output == "yaml" {
		y, err := yaml.JSONToYAML(js)
		if err != nil {
			return err
		}
		_, err = g.stdout.Write(y)
		return err
	}
	_, err = fmt.Fprintf(g.stdout, "%s\n", js)
	return err
}

func (g *globals) table() *tabwriter.Writer {
	return tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
}

// commands lists meshctl's subcommands; a new command (such as `trace
// TRACE_ID`) is one more entry.
func commands() []func(*globals) *cobra.Command {
	return []func(*globals) *cobra.Command{
		applyCmd, getCmd, deleteCmd, validateCmd, statusCmd, proxyConfigCmd, traceCmd, tokenCmd, caCmd,
	}
}

func newRoot(env func(string) (string, bool), stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	envOr := func(name, def string) string {
		if v, ok := env(name); ok && v != "" {
			return v
		}
		return def
	}
	root := &cobra.Command{
		Use:           "meshctl",
		Short:         "Command-line client of the Causeway control plane",
		SilenceUsage:  true,
		SilenceErrors: true,
		CompletionOptions: cobra.CompletionOptions{
			DisableDefaultCmd: true,
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", envOr("MESH_SERVER", DefaultServer), "control plane API URL (MESH_SERVER)")
	pf.StringVar(&g.token, "token", envOr("MESH_TOKEN", ""), "API bearer token (MESH_TOKEN)")
	pf.StringVar(&g.dataDir, "data-dir", envOr("MESH_DATA_DIR", ""), "control plane data directory: read the token from DIR/"+plane.TokenFile+
		" and, for an https:// server, trust DIR/"+plane.BundleFile+" (MESH_DATA_DIR)")
	pf.StringVar(&g.caFile, "ca-file", envOr("MESH_CA_FILE", ""), "PEM roots to verify an https:// server with, such as the control plane's DATA_DIR/"+plane.BundleFile+" (MESH_CA_FILE)")
	pf.StringVarP(&g.namespace, "namespace", "n", "", `namespace (default "default"; get lists every namespace when unset)`)
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	pf.DurationVar(&g.timeout, "timeout", 30*time.Second, "give up on the control plane after this long")
	for _, c := range commands() {
		root.AddCommand(c(g))
	}
	return root
}

// readInputs expands -f arguments: a file, a directory (its *.yaml, *.yml
// and *.json files, sorted, not recursive), or "-" for standard input.
func readInputs(cmd *cobra.Command, paths []string) ([]input, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("give -f FILE|DIR (or -f - for standard input)")
	}
	var out []input
	for _, p := range paths {
		if p == "-" {
			b, err := io.ReadAll(cmd.InOrStdin())
			if err != nil {
				return nil, err
			}
			out = append(out, input{name: "<stdin>", data: b})
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			b, err := os.ReadFile(p) //nolint:gosec // the operator names the file
			if err != nil {
				return nil, err
			}
			out = append(out, input{name: p, data: b})
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		found := false
		for _, e := range entries {
			ext := filepath.Ext(e.Name())
			if e.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
				continue
			}
			path := filepath.Join(p, e.Name())
			b, err := os.ReadFile(path) //nolint:gosec // inside the directory the operator named
			if err != nil {
				return nil, err
			}
			out = append(out, input{name: path, data: b})
			found = true
		}
		if !found {
			return nil, fmt.Errorf("%s: no .yaml, .yml or .json files", p)
		}
	}
	return out, nil
}

type input struct {
	name string
	data []byte
}

func age(t *time.Time) string {
	if t == nil {
		return "-"
	}
	d := time.Since(*t).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
