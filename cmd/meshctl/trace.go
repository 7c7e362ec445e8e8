package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/causeway-mesh/causeway/control/api"
	"github.com/causeway-mesh/causeway/tracing/causal"
	"github.com/causeway-mesh/causeway/tracing/receiver"
)

// DefaultTraceListLimit is how many traces `meshctl trace` lists without
// --limit.
const DefaultTraceListLimit = 20

func traceCmd(g *globals) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "trace [TRACE_ID]",
		Short: "Show a trace in causal (happens-before) order, or list recent traces",
		Long: `With TRACE_ID (32 hex digits, or a whole traceparent header), show the
trace's spans in happens-before order from the sidecars' Lamport and vector
clocks, with concurrency and clock-skew notes (-o json|yaml: the full
analysis). Without it, list the most recent traces the control plane has
received.

Sidecars export spans to the control plane when OTEL_EXPORTER_OTLP_ENDPOINT
points at it: http://CONTROL_PLANE:18080 (OTLP/HTTP), or CONTROL_PLANE:18000
with OTEL_EXPORTER_OTLP_PROTOCOL=grpc.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.checkOutput(true); err != nil {
				return err
			}
			var id string
			if len(args) == 1 {
				var err error
				if id, err = parseTraceID(args[0]); err != nil {
					return err
				}
			} else if limit < 1 || limit > api.MaxTraceLimit {
				return fmt.Errorf("--limit %d: want 1 to %d", limit, api.MaxTraceLimit)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			if id == "" {
				list, err := c.Traces(ctx, limit)
				if err != nil {
					return err
				}
				return g.printTraceList(list)
			}
			res, err := c.Causal(ctx, id)
			if err != nil {
				return err
			}
			if g.output != "table" {
				return g.print(res)
			}
			return causal.WriteText(g.stdout, *res)
		},
	}
	cmd.Flags().IntVar(&limit, "limit", DefaultTraceListLimit, "how many recent traces to list (without TRACE_ID)")
	return cmd
}

// parseTraceID accepts a trace id in either case, or a traceparent header
// value (VERSION-TRACE_ID-SPAN_ID-FLAGS), and returns the lower-case id.
func parseTraceID(arg string) (string, error) {
	s := strings.TrimSpace(arg)
	if parts := strings.Split(s, "-"); len(parts) == 4 {
		s = parts[1]
	}
	s = strings.ToLower(s)
	if !api.ValidTraceID(s) {
		return "", fmt.Errorf("trace id %q: want 32 hex digits (not all zero), or a traceparent such as 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", arg)
	}
	return s, nil
}

func (g *globals) printTraceList(list []receiver.TraceSummary) error {
	if list == nil {
		list = []receiver.TraceSummary{}
	}
	if g.output != "table" {
		return g.print(api.TraceList{Traces: list})
	}
	if len(list) == 0 {
		fmt.Fprintln(g.stderr, "No traces yet. Sidecars send spans here when OTEL_EXPORTER_OTLP_ENDPOINT points at the control plane "+
			"(http://CONTROL_PLANE:18080, or CONTROL_PLANE:18000 with OTEL_EXPORTER_OTLP_PROTOCOL=grpc); spans arrive in batches.")
		return nil
	}
	tw := g.table()
	fmt.Fprintln(tw, "TRACE-ID\tROOT\tSERVICES\tSPANS\tDURATION\tAGE")
	for _, s := range list {
		started := s.Start
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", s.TraceID, orDash(s.RootName), orDash(strings.Join(s.Services, ",")),
			s.SpanCount, msDuration(s.DurationMS), age(&started))
	}
	return tw.Flush()
}

// msDuration renders milliseconds as a Go duration rounded to the
// microsecond ("12.345ms").
func msDuration(ms float64) string {
	return time.Duration(ms * float64(time.Millisecond)).Round(time.Microsecond).String()
}
