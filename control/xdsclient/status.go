package xdsclient

import "time"

// Status is a point-in-time view of the client for the admin API.
type Status struct {
	// ServerAddr is the control-plane address the client dials.
	ServerAddr string `json:"serverAddr"`
	// Connected is true while an ADS stream is open.
	Connected bool `json:"connected"`
	// AppliedVersion is the snapshot version last accepted by Apply; empty
	// before the first.
	AppliedVersion string `json:"appliedVersion,omitempty"`
	// ACKed maps each type URL to the version_info last ACKed for it.
	ACKed map[string]string `json:"acked"`
	// Waiting says why a received configuration is not applied yet
	// (types still missing at its version, or unresolved references);
	// empty when nothing is pending.
	Waiting string `json:"waiting,omitempty"`
	// LastNACK is the most recent rejection; nil if none.
	LastNACK *NACKInfo `json:"lastNack,omitempty"`
	// LastUpdate is when Apply last succeeded; zero before the first.
	LastUpdate time.Time `json:"lastUpdate,omitzero"`
	// Reconnects counts streams opened after the first.
	Reconnects uint64 `json:"reconnects"`
	// UpdatesApplied counts successful Apply calls.
	UpdatesApplied uint64 `json:"updatesApplied"`
	// NACKs counts NACK messages sent.
	NACKs uint64 `json:"nacks"`
}

// NACKInfo describes a rejected version.
type NACKInfo struct {
	// Version is the rejected version_info.
	Version string `json:"version"`
	// TypeURL is the type whose response failed first.
	TypeURL string    `json:"typeUrl"`
	Error   string    `json:"error"`
	Time    time.Time `json:"time"`
}

// Metrics are optional hooks the client calls synchronously on its stream
// goroutine; they must not block. Nil fields are skipped.
type Metrics struct {
	// UpdateApplied is called after Apply accepted a snapshot.
	UpdateApplied func(version string)
	// NACKSent is called for every NACK message, with its type URL.
	NACKSent func(typeURL string)
	// Reconnect is called when a stream is opened after the first.
	Reconnect func()
}

func (s Status) clone() Status {
	acked := make(map[string]string, len(s.ACKed))
	for k, v := range s.ACKed {
		acked[k] = v
	}
	s.ACKed = acked
	if s.LastNACK != nil {
		n := *s.LastNACK
		s.LastNACK = &n
	}
	return s
}
