// Command meshctl is the command-line client of the Causeway control
// plane's API.
//
//	meshctl apply -f FILE|DIR          create or update resources
//	meshctl get KIND [NAME] | get all  list or show resources
//	meshctl delete KIND NAME           delete a resource
//	meshctl validate -f FILE|DIR       check files offline (exit 0 or 1)
//	meshctl status                     sidecars' sync state, members and fencing
//	meshctl proxy-config NODE          what a sidecar was given
//	meshctl trace [TRACE_ID]           a trace in causal order, or recent traces
//	meshctl token create --service S   a bootstrap token for a sidecar of S
//	meshctl ca status                  the CA's roots, rotation stage and sidecars
//	meshctl ca rotate STAGE [--force]  a root rotation step: prepare, activate, prune
//
// Global flags: --server URL (MESH_SERVER, default http://127.0.0.1:18080),
// --token (MESH_TOKEN), --data-dir DIR (MESH_DATA_DIR: read the token from
// DIR/api-token when no token is given, for use on the control plane's
// host), --ca-file FILE (MESH_CA_FILE), -n/--namespace, -o/--output
// table|json|yaml.
//
// An https:// server (a control plane run with --tls) is always verified:
// against the roots in --ca-file, else DATA_DIR/ca-bundle.pem when
// --data-dir is given and that file exists, else the system roots. There
// is no option to skip the verification.
//
// New commands register in commands() (see root.go): each is a
// func(*globals) *cobra.Command.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.LookupEnv, os.Stdin, os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, env func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(env, stdout, stderr)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		if code, ok := err.(exitCode); ok { //nolint:errorlint // a sentinel type, never wrapped
			return int(code)
		}
		fmt.Fprintln(stderr, "meshctl:", err)
		return 1
	}
	return 0
}

// exitCode ends the command with a status and no further message (the
// command printed its own).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
