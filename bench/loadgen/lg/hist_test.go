package lg

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestBucketIndexAndBounds(t *testing.T) {
	tests := []struct {
		name string
		v    int64
	}{
		{"zero", 0},
		{"one", 1},
		{"last exact", 2*subHalf - 1},
		{"first log bucket", 2 * subHalf},
		{"odd", 12345},
		{"1ms in ns", 1_000_000},
		{"power of two", 1 << 30},
		{"power of two minus one", 1<<30 - 1},
		{"max int64", math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := bucketIndex(tt.v)
			if i < 0 || i >= numBuckets {
				t.Fatalf("index %d out of range [0,%d)", i, numBuckets)
			}
			lo, hi := bucketBounds(i)
			if tt.v < lo || tt.v > hi {
				t.Fatalf("value %d not in its bucket [%d,%d]", tt.v, lo, hi)
			}
			if tt.v < 2*subHalf && lo != hi {
				t.Fatalf("small value %d should be exact, bucket [%d,%d]", tt.v, lo, hi)
			}
		})
	}
}

func TestBucketsAreContiguous(t *testing.T) {
	prevHi := int64(-1)
	last := bucketIndex(math.MaxInt64)
	for i := 0; i <= last; i++ {
		lo, hi := bucketBounds(i)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prevHi)
		}
		if hi < lo {
			t.Fatalf("bucket %d empty: [%d,%d]", i, lo, hi)
		}
		if bucketIndex(lo) != i || bucketIndex(hi) != i {
			t.Fatalf("bucket %d bounds map to %d, %d", i, bucketIndex(lo), bucketIndex(hi))
		}
		prevHi = hi
		if hi == math.MaxInt64 {
			break
		}
	}
}

func TestRelativePrecision(t *testing.T) {
	// The reported midpoint must be within 0.4 % of any value in the bucket.
	for _, v := range []int64{300, 999, 1000, 4097, 87_000, 146_000, 2_434_000, 1e9, 3e11} {
		var h Histogram
		h.Record(v)
		h.Record(0) // so the clamp to [min,max] does not hide the bucketing
		h.Record(math.MaxInt64 / 2)
		got := h.Quantile(0.5)
		if rel := math.Abs(float64(got-v)) / float64(v); rel > 0.004 {
			t.Errorf("v=%d: median %d, relative error %.4f", v, got, rel)
		}
	}
}

func TestQuantilesMatchExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name string
		gen  func() int64
	}{
		{"uniform 0..1ms", func() int64 { return r.Int64N(1_000_000) }},
		{"lognormal around 150us", func() int64 { return int64(150_000 * math.Exp(r.NormFloat64()*0.5)) }},
		{"small integers", func() int64 { return r.Int64N(200) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Histogram
			vals := make([]int64, 50_000)
			for i := range vals {
				vals[i] = tt.gen()
				h.Record(vals[i])
			}
			slices.Sort(vals)
			for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
				rank := int(math.Ceil(q*float64(len(vals)))) - 1
				exact := vals[rank]
				got := h.Quantile(q)
				tol := math.Max(1, 0.004*float64(exact))
				if math.Abs(float64(got-exact)) > tol {
					t.Errorf("q=%v: got %d, exact %d", q, got, exact)
				}
			}
			if h.Min() != vals[0] || h.Max() != vals[len(vals)-1] {
				t.Errorf("min/max %d/%d, want %d/%d", h.Min(), h.Max(), vals[0], vals[len(vals)-1])
			}
		})
	}
}

func TestQuantileEdgeCases(t *testing.T) {
	var empty Histogram
	tests := []struct {
		name   string
		values []int64
		q      float64
		want   int64
	}{
		{"empty", nil, 0.5, 0},
		{"single", []int64{42}, 0.99, 42},
		{"q0 is min", []int64{5, 10, 20}, 0, 5},
		{"q1 is max", []int64{5, 10, 20}, 1, 20},
		{"median of three", []int64{5, 10, 20}, 0.5, 10},
		{"negative clamps to 0", []int64{-7}, 0.5, 0},
		{"p50 of 1..100", seq(1, 100), 0.5, 50},
		{"p99 of 1..100", seq(1, 100), 0.99, 99},
		{"p99.9 of 1..100", seq(1, 100), 0.999, 100},
	}
	_ = empty
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Histogram
			for _, v := range tt.values {
				h.Record(v)
			}
			if got := h.Quantile(tt.q); got != tt.want {
				t.Fatalf("Quantile(%v) = %d, want %d", tt.q, got, tt.want)
			}
		})
	}
}

func seq(a, b int64) []int64 {
	var s []int64
	for v := a; v <= b; v++ {
		s = append(s, v)
	}
	return s
}

func TestMergeEqualsCombined(t *testing.T) {
	var a, b, all Histogram
	for v := int64(0); v < 10_000; v += 7 {
		a.Record(v * 100)
		all.Record(v * 100)
	}
	for v := int64(0); v < 3_000; v += 3 {
		b.Record(v * 1000)
		all.Record(v * 1000)
	}
	var empty Histogram
	a.Merge(&empty)
	a.Merge(&b)
	if a.Count() != all.Count() || a.Min() != all.Min() || a.Max() != all.Max() || a.Mean() != all.Mean() {
		t.Fatalf("merged stats differ: %d/%d/%d/%v vs %d/%d/%d/%v",
			a.Count(), a.Min(), a.Max(), a.Mean(), all.Count(), all.Min(), all.Max(), all.Mean())
	}
	for _, q := range []float64{0.1, 0.5, 0.9, 0.99, 0.999} {
		if a.Quantile(q) != all.Quantile(q) {
			t.Errorf("q=%v: merged %d, combined %d", q, a.Quantile(q), all.Quantile(q))
		}
	}
	var into Histogram
	into.Merge(&b)
	if into.Min() != b.Min() {
		t.Errorf("merge into empty: min %d, want %d", into.Min(), b.Min())
	}
	a.Reset()
	if a.Count() != 0 || a.Quantile(0.5) != 0 {
		t.Errorf("reset histogram not empty")
	}
}
