package resilience

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"testing"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
)

func TestClassify(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	tests := []struct {
		name    string
		in      Attempt
		outcome Outcome
		kind    Kind
		unsent  bool
	}{
		{"200", Attempt{Status: 200}, Success, KindOK, false},
		{"404", Attempt{Status: 404}, Success, KindOK, false},
		{"429", Attempt{Status: 429}, Success, KindOK, false},
		{"500", Attempt{Status: 500}, Failure, KindStatus5xx, false},
		{"502", Attempt{Status: 502}, Failure, KindGateway, false},
		{"503", Attempt{Status: 503}, Failure, KindGateway, false},
		{"504", Attempt{Status: 504}, Failure, KindGateway, false},
		{"grpc unavailable", Attempt{Status: 200, GRPCStatus: codes.Unavailable, HasGRPCStatus: true}, Failure, KindGRPCUnavailable, false},
		{"grpc internal", Attempt{Status: 200, GRPCStatus: codes.Internal, HasGRPCStatus: true}, Failure, KindGRPCServerError, false},
		{"grpc not found", Attempt{Status: 200, GRPCStatus: codes.NotFound, HasGRPCStatus: true}, Success, KindOK, false},
		{"grpc ok", Attempt{Status: 200, HasGRPCStatus: true}, Success, KindOK, false},
		{"dial", Attempt{Err: dial}, Failure, KindConnectFailure, true},
		{"refused stream", Attempt{Err: http2.StreamError{StreamID: 3, Code: http2.ErrCodeRefusedStream}}, Failure, KindRefusedStream, true},
		{"reset", Attempt{Err: http2.StreamError{StreamID: 3, Code: http2.ErrCodeInternal}}, Failure, KindReset, false},
		{"deadline", Attempt{Err: context.DeadlineExceeded}, Failure, KindTimeout, false},
		{"io deadline", Attempt{Err: os.ErrDeadlineExceeded}, Failure, KindTimeout, false},
		{"proxy cancelled", Attempt{Err: context.Canceled}, Failure, KindReset, false},
		{"client cancelled", Attempt{Err: context.Canceled, ClientGone: true}, Excluded, KindClientGone, false},
		{"client gone beats dial error", Attempt{Err: dial, ClientGone: true}, Excluded, KindClientGone, false},
		{"client gone beats 503", Attempt{Status: 503, ClientGone: true}, Excluded, KindClientGone, false},
		{"client body error", Attempt{Err: errors.New("unexpected EOF"), ClientError: true}, Excluded, KindClientError, false},
	}
	for _, tt := range tests {
		got := Classify(tt.in)
		if got.Outcome != tt.outcome || got.Kind != tt.kind || got.Unsent != tt.unsent {
			t.Errorf("%s: Classify = %v/%v unsent %v, want %v/%v unsent %v", tt.name, got.Outcome, got.Kind, got.Unsent, tt.outcome, tt.kind, tt.unsent)
		}
	}
}

func TestGRPCStatusFrom(t *testing.T) {
	tests := []struct {
		h    http.Header
		code codes.Code
		ok   bool
	}{
		{http.Header{}, 0, false},
		{http.Header{"Grpc-Status": {"14"}}, codes.Unavailable, true},
		{http.Header{"Grpc-Status": {"0"}}, codes.OK, true},
		{http.Header{"Grpc-Status": {"x"}}, 0, false},
	}
	for _, tt := range tests {
		c, ok := GRPCStatusFrom(tt.h)
		if c != tt.code || ok != tt.ok {
			t.Errorf("GRPCStatusFrom(%v) = %v, %v; want %v, %v", tt.h, c, ok, tt.code, tt.ok)
		}
	}
}

func TestStringers(t *testing.T) {
	for k := KindOK; k <= KindGRPCServerError; k++ {
		if s := k.String(); s == "" || s[0] == 'k' {
			t.Errorf("Kind(%d).String() = %q", k, s)
		}
	}
	for r := ReasonRetry; r <= ReasonOverflow; r++ {
		if s := r.String(); s == "" || s[:3] == "rea" {
			t.Errorf("Reason(%d).String() = %q", r, s)
		}
	}
	if Excluded.String() != "excluded" || BreakerHalfOpen.String() != "half-open" {
		t.Errorf("unexpected names %q %q", Excluded, BreakerHalfOpen)
	}
}

func errDial() error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
}
