package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/causeway-mesh/causeway/proxy/fencing"
)

// HeaderEpoch carries the fencing epoch a write was admitted under, and
// HeaderEpochDomain the fencing domain that epoch counts in ("mesh" or
// "service/NAME"): each domain numbers its epochs on its own, so a
// receiving sidecar compares an epoch only with its own domain's.
const (
	HeaderEpoch       = "X-Mesh-Epoch"
	HeaderEpochDomain = "X-Mesh-Epoch-Domain"
)

// fenceOutbound refuses the app's writes while this sidecar is fenced and
// stamps the others with the epoch they are admitted under. Reads pass.
func (s *Sidecar) fenceOutbound(ew *errorWriter, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.writes.Load().IsWrite(r) {
			next.ServeHTTP(w, r)
			return
		}
		if s.fence.Fenced() {
			s.m.fencedWrites.WithLabelValues("outbound").Inc()
			// The refusal has a span of its own: the trace shows where the
			// write stopped.
			_, span := s.tracer.StartClient(r.Context(), r, "")
			ew.write(w, r, ErrFenced.with(errFenced(s.fence.State())))
			span.End(ErrFenced.Status, ErrFenced.Code)
			return
		}
		if e := s.fence.Epoch(); e > 0 {
			r.Header[HeaderEpoch] = []string{strconv.FormatUint(e, 10)}
			r.Header[HeaderEpochDomain] = []string{s.fenceDomainName()}
		}
		next.ServeHTTP(w, r)
	})
}

// fenceInbound refuses writes from other sidecars while this one is fenced,
// and writes admitted under an epoch older than the newest it knows. The
// epoch header reaches the app, which may use it as a fencing token.
func (s *Sidecar) fenceInbound(ew *errorWriter, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.writes.Load().IsWrite(r) {
			delete(r.Header, HeaderEpoch)
			delete(r.Header, HeaderEpochDomain)
			next.ServeHTTP(w, r)
			return
		}
		if s.fence.Fenced() {
			s.m.fencedWrites.WithLabelValues("inbound").Inc()
			ew.write(w, r, ErrFenced.with(errFenced(s.fence.State())))
			return
		}
		var epoch uint64
		if v := r.Header.Get(HeaderEpoch); v != "" {
			e, err := strconv.ParseUint(v, 10, 64)
			if err != nil || len(r.Header[HeaderEpoch]) > 1 {
				ew.write(w, r, ErrBadRequest.with(errBadEpoch))
				return
			}
			epoch = e
		}
		// An epoch of another domain says nothing about this one's quorum
		// (this sidecar's own fence has just been checked): not compared,
		// not adopted. A write without a domain is from a sidecar that
		// predates the header: compared, as before.
		if d := r.Header[HeaderEpochDomain]; len(d) > 1 {
			ew.write(w, r, ErrBadRequest.with(errBadEpoch))
			return
		} else if len(d) == 1 && d[0] != s.fenceDomainName() {
			epoch = 0
		}
		if !s.fence.Admit(epoch) {
			s.m.fencedWrites.WithLabelValues("stale_epoch").Inc()
			ew.write(w, r, ErrStaleEpoch.with(fmt.Errorf("epoch %d, newest known %d", epoch, s.fence.Epoch())))
			return
		}
		next.ServeHTTP(w, r)
	})
}

var errBadEpoch = errors.New("x-mesh-epoch is not one decimal number, or x-mesh-epoch-domain is repeated")

func errFenced(st *fencing.State) error {
	return fmt.Errorf("fenced by %s: %s", st.Source, st.Reason)
}

// handleFencing serves GET /fencing.
func (s *Sidecar) handleFencing(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	st := *s.fence.State()
	st.Fenced = s.fence.Fenced()
	_ = json.NewEncoder(w).Encode(st)
}
