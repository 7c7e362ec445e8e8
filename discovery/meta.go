package discovery

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Meta is what a member says about itself in its gossip metadata: which
// service it fronts and where other sidecars reach it.
//
// Wire format (at most MaxMetaSize bytes, memberlist's limit):
//
//	byte     format version (metaVersion)
//	byte     flags: bit 0 ready, bit 1 serving (not a watch-only member),
//	         bit 2 leaving
//	uvarint  weight
//	uvarint  incarnation (start time of this sidecar process, unix ms)
//	then five strings, each a uvarint length and bytes:
//	service, inbound address, app protocol, zone, app version
//
// A decoder refuses a higher format version than it knows, so a newer
// sidecar can change the format and older ones ignore it rather than
// misread it.
type Meta struct {
	Service     string // service name; empty for a watch-only member (the control plane)
	Inbound     string // HOST:PORT of the sidecar's inbound listener
	Protocol    string // the app's protocol: http1, h2c, grpc, tcp
	Zone        string // locality, for zone-aware balancing later
	Version     string // the app's version, for canary routing later
	Weight      uint32 // relative share of traffic; 0 means 1
	Ready       bool   // the sidecar reports ready; unready members get no traffic
	Leaving     bool   // the member is leaving gracefully (see Agent.Leave)
	Incarnation uint64 // distinguishes restarts of the same node id
}

// MaxMetaSize is memberlist's limit on node metadata.
const MaxMetaSize = 512

const (
	metaVersion = 1

	flagReady   = 1 << 0
	flagServing = 1 << 1
	flagLeaving = 1 << 2
)

// Encode returns the wire form of m, or an error if it exceeds MaxMetaSize.
func (m Meta) Encode() ([]byte, error) {
	b := make([]byte, 0, 64+len(m.Service)+len(m.Inbound)+len(m.Zone)+len(m.Version))
	b = append(b, metaVersion)
	var flags byte
	if m.Ready {
		flags |= flagReady
	}
	if m.Service != "" {
		flags |= flagServing
	}
	if m.Leaving {
		flags |= flagLeaving
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(m.Weight))
	b = binary.AppendUvarint(b, m.Incarnation)
	for _, s := range []string{m.Service, m.Inbound, m.Protocol, m.Zone, m.Version} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	if len(b) > MaxMetaSize {
		return nil, fmt.Errorf("gossip metadata is %d bytes, more than memberlist's %d", len(b), MaxMetaSize)
	}
	return b, nil
}

// Errors from DecodeMeta.
var (
	ErrMetaTruncated = errors.New("gossip metadata truncated")
	ErrMetaVersion   = errors.New("gossip metadata from a newer format version")
)

// DecodeMeta parses the wire form. Unknown trailing bytes are ignored, so a
// later version of the same format may append fields.
func DecodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) < 2 {
		return m, ErrMetaTruncated
	}
	if b[0] == 0 || b[0] > metaVersion {
		return m, fmt.Errorf("%w: version %d", ErrMetaVersion, b[0])
	}
	m.Ready = b[1]&flagReady != 0
	m.Leaving = b[1]&flagLeaving != 0
	b = b[2:]
	w, n := binary.Uvarint(b)
	if n <= 0 || w > 1<<31 {
		return m, ErrMetaTruncated
	}
	m.Weight, b = uint32(w), b[n:]
	inc, n := binary.Uvarint(b)
	if n <= 0 {
		return m, ErrMetaTruncated
	}
	m.Incarnation, b = inc, b[n:]
	for _, dst := range []*string{&m.Service, &m.Inbound, &m.Protocol, &m.Zone, &m.Version} {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return m, ErrMetaTruncated
		}
		*dst = string(b[n : n+int(l)])
		b = b[n+int(l):]
	}
	return m, nil
}
