// Package lg is the logic of the Causeway benchmark load generator: an
// HDR-style log-linear latency histogram, a wrk2-style fixed-rate schedule,
// precise pacing, a minimal HTTP/1.1 keep-alive client and the open- and
// closed-loop drivers.
package lg

import (
	"math"
	"math/bits"
)

// Histogram layout. Values (nanoseconds, or any non-negative int64) below
// 2*subHalf are stored exactly. Above that, every power-of-two range
// [2^k, 2^(k+1)) is split into subHalf equal sub-buckets, so a bucket spans at
// most 1/subHalf of its lower bound. Reporting the bucket midpoint gives a
// relative error of at most 1/(2*subHalf) = 0.39 %.
const (
	subBits = 8
	subHalf = 1 << (subBits - 1) // 128 sub-buckets per octave
	// Enough buckets for every non-negative int64.
	numBuckets = (64-subBits+1)*subHalf + subHalf
)

// Histogram is a log-linear histogram of non-negative int64 values with a
// relative precision of better than 0.4 %. The zero value is ready to use.
// It is not safe for concurrent use; give each goroutine its own and Merge.
type Histogram struct {
	counts [numBuckets]uint64
	n      uint64
	min    int64
	max    int64
	sum    float64
}

// bucketIndex maps v (>= 0) to its bucket.
func bucketIndex(v int64) int {
	if v < 2*subHalf {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - subBits // >= 1 here
	sub := int(uint64(v) >> uint(shift))     // in [subHalf, 2*subHalf)
	return shift*subHalf + sub
}

// bucketBounds returns the inclusive lower and upper value of bucket i.
func bucketBounds(i int) (lo, hi int64) {
	if i < 2*subHalf {
		return int64(i), int64(i)
	}
	shift := i/subHalf - 1
	sub := int64(i - shift*subHalf)
	lo = sub << uint(shift)
	hi = lo + (int64(1) << uint(shift)) - 1
	if hi < lo { // overflow at the very top of the int64 range
		hi = math.MaxInt64
	}
	return lo, hi
}

// Record adds one value. Negative values are recorded as 0.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[bucketIndex(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Min returns the smallest recorded value (0 when empty).
func (h *Histogram) Min() int64 { return h.min }

// Max returns the largest recorded value (0 when empty).
func (h *Histogram) Max() int64 { return h.max }

// Mean returns the arithmetic mean of the recorded values (exact, not bucketed).
func (h *Histogram) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// Merge adds all of o's values into h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Reset empties the histogram.
func (h *Histogram) Reset() { *h = Histogram{} }

// Quantile returns the value at quantile q in [0, 1]: the smallest recorded
// value v such that at least ceil(q*n) values are <= v, approximated by the
// midpoint of its bucket and clamped to [Min, Max]. It returns 0 when empty.
func (h *Histogram) Quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	if q <= 0 {
		return h.min
	}
	if q >= 1 {
		return h.max
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var cum uint64
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		cum += c
		if cum >= rank {
			lo, hi := bucketBounds(i)
			v := lo + (hi-lo)/2
			if v < h.min {
				v = h.min
			}
			if v > h.max {
				v = h.max
			}
			return v
		}
	}
	return h.max
}
