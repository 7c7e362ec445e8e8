package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/causeway-mesh/causeway/control/ca/bootstrap"
)

// defaultTokenTTL is how long a token from `meshctl token create` lives
// unless --ttl says otherwise: long enough to start a sidecar, short
// enough that a leaked token soon stops mattering.
const defaultTokenTTL = time.Hour

func tokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Bootstrap tokens: what a sidecar presents once to obtain its mesh certificate (control plane run with --tls)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(tokenCreateCmd(g))
	return cmd
}

func tokenCreateCmd(g *globals) *cobra.Command {
	var (
		service   string
		ttl       time.Duration
		singleUse bool
	)
	cmd := &cobra.Command{
		Use:   "create --service NAME [-n NAMESPACE] [--ttl 1h] [--single-use]",
		Short: "Create a bootstrap token for one service; prints the token (shown once) on standard output",
		Long: `Create a bootstrap token scoped to one service (and namespace, default "default").
The token is printed alone on standard output, so that it can go straight into
a file (meshctl token create --service orders > orders.token; chmod 600 it);
what it is for and when it expires go to standard error. The control plane keeps
only its hash. A sidecar presents it with --bootstrap-token-file FILE or
MESH_BOOTSTRAP_TOKEN.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.checkOutput(true); err != nil {
				return err
			}
			if service == "" {
				return errors.New("--service is required: the service whose sidecars will present the token")
			}
			if ttl <= 0 {
				return fmt.Errorf("--ttl %v: must be positive", ttl)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			resp, err := c.CreateBootstrapToken(ctx, bootstrap.CreateRequest{
				Service: service, Namespace: g.namespace, TTL: ttl.String(), SingleUse: singleUse,
			})
			if err != nil {
				return err
			}
			if g.output != "table" {
				return g.print(resp)
			}
			uses := "any number of times until then"
			if resp.SingleUse {
				uses = "once"
			}
			fmt.Fprintf(g.stderr, "bootstrap token %s for service %s (namespace %s), valid until %s, usable %s; it is shown only now\n",
				resp.ID, resp.Service, resp.Namespace, resp.ExpiresAt.Local().Format(time.RFC3339), uses)
			_, err = fmt.Fprintln(g.stdout, resp.Token)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&service, "service", "", "the service whose sidecars will present the token (required)")
	f.DurationVar(&ttl, "ttl", defaultTokenTTL, "how long the token is valid (at most 720h)")
	f.BoolVar(&singleUse, "single-use", false, "the token obtains one certificate only")
	return cmd
}
