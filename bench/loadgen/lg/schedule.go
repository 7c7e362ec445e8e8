package lg

import (
	"errors"
	"math"
	"time"
)

// Schedule is a wrk2-style global fixed-rate schedule: request i is intended
// to be sent at Offset(i) = i/Rate after the start. Connection c (0 <= c <
// Conns) owns the interleaved slice i = c, c+Conns, c+2*Conns, ..., so the
// union of all connections' requests is exactly the global schedule and each
// connection individually runs at Rate/Conns.
type Schedule struct {
	Rate  float64 // requests per second, > 0
	Conns int     // number of connections sharing the schedule, > 0
	Total int64   // number of requests in the whole schedule
}

// NewSchedule builds the schedule for rate requests/s over span, shared by
// conns connections.
func NewSchedule(rate float64, span time.Duration, conns int) (Schedule, error) {
	if !(rate > 0) || math.IsInf(rate, 0) {
		return Schedule{}, errors.New("rate must be a positive number")
	}
	if conns <= 0 {
		return Schedule{}, errors.New("conns must be positive")
	}
	if span <= 0 {
		return Schedule{}, errors.New("span must be positive")
	}
	total := int64(math.Floor(rate*span.Seconds() + 1e-9))
	if total < 1 {
		total = 1
	}
	return Schedule{Rate: rate, Conns: conns, Total: total}, nil
}

// Offset is the intended send time of global request i relative to the start.
// It is computed from i directly (not accumulated), so it never drifts.
func (s Schedule) Offset(i int64) time.Duration {
	return time.Duration(math.Round(float64(i) * 1e9 / s.Rate))
}

// Index returns the global index of connection c's k-th request (k from 0),
// and false once that is past the end of the schedule.
func (s Schedule) Index(c int, k int64) (int64, bool) {
	i := int64(c) + k*int64(s.Conns)
	return i, i < s.Total
}

// CountFor is the number of requests connection c owns.
func (s Schedule) CountFor(c int) int64 {
	if c < 0 || c >= s.Conns || int64(c) >= s.Total {
		return 0
	}
	return (s.Total-int64(c)-1)/int64(s.Conns) + 1
}

// FirstAtOrAfter returns the smallest global index whose offset is >= d
// (the first request of a measurement window that starts at d).
func (s Schedule) FirstAtOrAfter(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	i := int64(math.Ceil(d.Seconds()*s.Rate - 1e-9))
	// Correct floating-point edge cases in either direction.
	for i > 0 && s.Offset(i-1) >= d {
		i--
	}
	for s.Offset(i) < d {
		i++
	}
	return i
}
