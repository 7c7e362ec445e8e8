package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/causeway-mesh/causeway/control/ca/rotation"
)

func caCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "The mesh's certificate authority: status and staged root rotation (control plane run with --tls)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(caStatusCmd(g), caRotateCmd(g))
	return cmd
}

func caStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the CA's roots, the rotation stage, the connected sidecars and the next step",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.checkOutput(true); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			st, err := c.CAStatus(ctx)
			if err != nil {
				return err
			}
			if g.output != "table" {
				return g.print(st)
			}
			return g.printCA(st)
		},
	}
}

func caRotateCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rotate prepare|activate|prune [--force]",
		Short: "Run one stage of a root rotation",
		Long: `Rotate the mesh CA's root in three stages, each run once the previous one has
reached the fleet:

  prepare   a new root joins the trust bundle; the old root keeps signing.
            Connected sidecars receive the new bundle at once.
  activate  the new root signs new leaves. Refused until every connected
            sidecar has acknowledged the new bundle (or the leaf lifetime
            has passed since prepare). Sidecars then renew onto the new root
            within the control plane's --ca-renew-window.
  prune     the old roots leave the bundle. Refused while a leaf of an old
            root is neither re-issued nor expired.

--force runs a stage the mesh is not ready for: after a forced activate,
sidecars without the new bundle refuse peers with new certificates until it
arrives; after a forced prune, sidecars still holding an old certificate are
refused by their peers until they bootstrap again with a token.
"meshctl ca status" shows what a stage is waiting for.`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{string(rotation.Prepare), string(rotation.Activate), string(rotation.Prune)},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.checkOutput(true); err != nil {
				return err
			}
			if _, err := rotation.ParseAction(args[0]); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			st, err := c.RotateCA(ctx, args[0], force)
			if err != nil {
				return err
			}
			if g.output != "table" {
				return g.print(st)
			}
			fmt.Fprintf(g.stdout, "%s: done; the CA is now %s\n\n", args[0], st.Stage)
			return g.printCA(st)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "run the stage even when the mesh is not ready for it")
	return cmd
}

// printCA writes a CA status as text: a summary, one row per root, and
// the next step.
func (g *globals) printCA(st *rotation.Status) error {
	stage := string(st.Stage)
	switch {
	case st.ActivatedAt != nil:
		stage += " (activated " + st.ActivatedAt.Local().Format(time.RFC3339) + ")"
	case st.PreparedAt != nil:
		stage += " (prepared " + st.PreparedAt.Local().Format(time.RFC3339) + ")"
	}
	fmt.Fprintf(g.stdout, "CA: %s, trust domain %s, stage %s\n", st.Mode, st.TrustDomain, stage)
	fmt.Fprintf(g.stdout, "sidecars: %d connected, %d hold the current bundle (%s)\n",
		st.Sidecars.Connected, st.Sidecars.CurrentBundle, shortHash(st.Bundle))
	if len(st.Sidecars.Pending) > 0 {
		fmt.Fprintf(g.stdout, "  not yet acknowledged: %s\n", strings.Join(st.Sidecars.Pending, ", "))
	}
	fmt.Fprintln(g.stdout)
	tw := g.table()
	fmt.Fprintln(tw, "ROOT\tSTATE\tNOT-AFTER\tLEAVES-IN-USE\tCONNECTED\tPIN")
	for _, r := range st.Roots {
		leaves := fmt.Sprint(r.Leaves)
		if r.LeavesUntil != nil && r.Leaves > 0 {
			leaves += " (until " + r.LeavesUntil.Local().Format(time.RFC3339) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", r.Fingerprint, r.State, r.NotAfter.Local().Format("2006-01-02"), leaves, r.Connected, r.Pin)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if st.Next == nil {
		fmt.Fprintln(g.stdout, "\nrotation: the operator's (replace the CA files and restart the control plane)")
		return nil
	}
	ready := "ready"
	if !st.Next.Ready {
		ready = "not ready"
	}
	fmt.Fprintf(g.stdout, "\nnext: %s: %s: %s\n", st.Next.Action, ready, st.Next.Reason)
	if !st.Next.Ready && st.Next.SafeAfter != nil {
		fmt.Fprintf(g.stdout, "  ready by %s at the latest, or run it with --force\n", st.Next.SafeAfter.Local().Format(time.RFC3339))
	}
	return nil
}

// shortHash abbreviates a hex digest.
func shortHash(h string) string {
	if len(h) > 16 {
		return "sha256 " + h[:16] + "…"
	}
	return h
}
