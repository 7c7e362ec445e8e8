package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/causeway-mesh/causeway/control/apiclient"
	"github.com/causeway-mesh/causeway/control/policy"
)

func (g *globals) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), g.timeout)
}

// decodeInputs decodes every document of every input and prints each
// problem as FILE: document N (REF): FIELD: CODE: MESSAGE. It returns the
// resources and whether all were valid.
func decodeInputs(g *globals, ins []input) ([]*policy.Resource, bool) {
	var all []*policy.Resource
	ok := true
	for _, in := range ins {
		rs, err := policy.DecodeAll(in.data)
		all = append(all, rs...)
		if err == nil {
			continue
		}
		ok = false
		var joined interface{ Unwrap() []error }
		errs := []error{err}
		if errors.As(err, &joined) {
			errs = joined.Unwrap()
		}
		for _, e := range errs {
			var de *policy.DocumentError
			if errors.As(e, &de) {
				where := fmt.Sprintf("document %d", de.Index+1)
				if de.Ref != "" {
					where += " (" + de.Ref + ")"
				}
				for _, fe := range de.Errs {
					fmt.Fprintf(g.stderr, "%s: %s: %s\n", in.name, where, fe.Error())
				}
				continue
			}
			fmt.Fprintf(g.stderr, "%s: %v\n", in.name, e)
		}
	}
	if ok {
		if errs := policy.CheckSet(all); len(errs) > 0 {
			ok = false
			for _, fe := range errs {
				fmt.Fprintln(g.stderr, fe.Error())
			}
		}
	}
	return all, ok
}

func applyCmd(g *globals) *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR",
		Short: "Create or update the resources in files (validated first; nothing is sent if any is invalid)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ins, err := readInputs(cmd, files)
			if err != nil {
				return err
			}
			rs, ok := decodeInputs(g, ins)
			if !ok {
				fmt.Fprintln(g.stderr, "meshctl: nothing applied; fix the errors above")
				return exitCode(1)
			}
			if len(rs) == 0 {
				return errors.New("the files hold no resources")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			for _, r := range rs {
				if g.namespace != "" && r.Metadata.Namespace == "" {
					r.Metadata.Namespace = g.namespace
				}
				stored, created, err := c.Apply(ctx, r)
				if err != nil {
					return fmt.Errorf("%s %s: %w", r.Kind, r.Key().Namespace+"/"+r.Metadata.Name, err)
				}
				verb := "configured"
				if created {
					verb = "created"
				}
				fmt.Fprintf(g.stdout, "%s/%s %s (resourceVersion %s)\n", strings.ToLower(string(stored.Kind)), stored.Metadata.Name, verb, stored.Metadata.ResourceVersion)
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "file or directory of YAML resources (repeatable; - for standard input)")
	return cmd
}

func getCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get KIND|all [NAME]",
		Short: "List resources of a kind (or all), or show one",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.checkOutput(true); err != nil {
				return err
			}
			var kind policy.Kind
			if args[0] != "all" {
				k, err := policy.ParseKind(args[0])
				if err != nil {
					return err
				}
				kind = k
			} else if len(args) == 2 {
				return errors.New("get all takes no NAME")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			var items []*policy.Resource
			if len(args) == 2 {
				r, err := c.Get(ctx, kind, g.namespace, args[1])
				if err != nil {
					return err
				}
				if g.output != "table" {
					return g.print(r)
				}
				items = []*policy.Resource{r}
			} else {
				items, err = c.List(ctx, kind, g.namespace)
				if err != nil {
					return err
				}
				if g.output != "table" {
					if items == nil {
						items = []*policy.Resource{}
					}
					return g.print(map[string]any{"apiVersion": policy.APIVersion, "kind": "List", "items": items})
				}
			}
			if len(items) == 0 {
				fmt.Fprintln(g.stderr, "No resources found.")
				return nil
			}
			tw := g.table()
			fmt.Fprintln(tw, "KIND\tNAMESPACE\tNAME\tTARGET\tRESOURCE-VERSION\tAGE")
			for _, r := range items {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Kind, r.Key().Namespace, r.Metadata.Name, target(r), r.Metadata.ResourceVersion, age(r.Metadata.CreationTimestamp))
			}
			return tw.Flush()
		},
	}
}

// target summarises what a resource applies to.
func target(r *policy.Resource) string {
	rr, err := policy.Load(mustJSON(r))
	if err != nil {
		return "-"
	}
	switch {
	case rr.HTTPRoute != nil:
		var names []string
		for _, p := range rr.HTTPRoute.ParentRefs {
			names = append(names, p.Name)
		}
		return strings.Join(names, ",")
	case rr.BackendPolicy != nil:
		return rr.BackendPolicy.TargetRef.Name
	case rr.FencingPolicy != nil:
		if rr.FencingPolicy.TargetRef.Kind == policy.TargetMesh {
			return "(mesh)"
		}
		return rr.FencingPolicy.TargetRef.Name
	}
	return "-"
}

func deleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete KIND NAME",
		Short: "Delete a resource",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := policy.ParseKind(args[0])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			if err := c.Delete(ctx, kind, g.namespace, args[1]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s/%s deleted\n", strings.ToLower(string(kind)), args[1])
			return nil
		},
	}
}

func validateCmd(g *globals) *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "validate -f FILE|DIR",
		Short: "Check resources offline; exit 0 if all are valid, 1 otherwise",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ins, err := readInputs(cmd, files)
			if err != nil {
				return err
			}
			rs, ok := decodeInputs(g, ins)
			if !ok {
				return exitCode(1)
			}
			fmt.Fprintf(g.stdout, "%d resources valid\n", len(rs))
			return nil
		},
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "file or directory of YAML resources (repeatable; - for standard input)")
	return cmd
}

func statusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show every sidecar's configuration sync state and the gossip members",
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
			px, err := c.Proxies(ctx)
			if err != nil {
				return err
			}
			mem, err := c.Members(ctx)
			if err != nil {
				return err
			}
			// The fencing view is shown when the control plane offers it.
			fen, err := c.Fencing(ctx)
			switch {
			case apiclient.IsNotFound(err):
				fen = nil
			case err != nil:
				return fmt.Errorf("reading the fencing view: %w", err)
			}
			if g.output != "table" {
				out := map[string]any{"build": px.Build, "proxies": px.Proxies, "members": mem.Members, "instances": mem.Instances}
				if fen != nil {
					out["fencing"] = fen
				}
				return g.print(out)
			}
			fmt.Fprintf(g.stdout, "configuration version: %s\n", orDash(px.Build.Version))
			if px.Build.Error != "" {
				fmt.Fprintf(g.stdout, "last build FAILED: %s\n", px.Build.Error)
			}
			fmt.Fprintln(g.stdout)
			tw := g.table()
			fmt.Fprintln(tw, "NODE\tSERVICE\tSTATE\tVERSION\tCONNECTED\tLAST-SEEN\tERROR")
			for _, p := range px.Proxies {
				seen := p.LastSeen
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\t%s\n", p.Node, orDash(p.Service), p.State, orDash(p.Version), p.Connected, age(&seen), orDash(oneLine(p.Error)))
			}
			if len(px.Proxies) == 0 {
				fmt.Fprintln(tw, "(no sidecar has connected)")
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(g.stdout)
			tw = g.table()
			fmt.Fprintln(tw, "MEMBER\tSERVICE\tADDRESS\tSTATE\tREADY\tZONE")
			for _, m := range mem.Members {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\n", m.Name, orDash(m.Service), orDash(m.Inbound), m.State, m.Ready, orDash(m.Zone))
			}
			if len(mem.Members) == 0 {
				fmt.Fprintln(tw, "(no gossip members: the control plane runs without --gossip, or has not joined)")
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if fen == nil {
				return nil
			}
			return g.printFencing(fen)
		},
	}
}

func proxyConfigCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "proxy-config NODE",
		Short: "Show the xDS configuration a sidecar was given (-o json for every field)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.checkOutput(true); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			pc, err := c.ProxyConfig(ctx, args[0])
			if err != nil {
				return err
			}
			if g.output != "table" {
				return g.print(pc)
			}
			fmt.Fprintf(g.stdout, "node %s, version %s\n\n", pc.Node, pc.Version)
			tw := g.table()
			fmt.Fprintln(tw, "TYPE\tNAME")
			types := make([]string, 0, len(pc.Resources))
			for t := range pc.Resources {
				types = append(types, t)
			}
			slices.Sort(types)
			for _, t := range types {
				short := t[strings.LastIndex(t, ".")+1:]
				for _, raw := range pc.Resources[t] {
					fmt.Fprintf(tw, "%s\t%s\n", short, resourceName(raw))
				}
			}
			return tw.Flush()
		},
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}
