package replication

import (
	"testing"
	"time"
)

// TestBackoff: attempt n waits between half and all of
// min(most, least·2^n), and never more than most however many attempts.
func TestBackoff(t *testing.T) {
	const least, most = 50 * time.Millisecond, time.Second
	for _, tc := range []struct {
		attempt int
		ceil    time.Duration
	}{
		{0, 50 * time.Millisecond}, {1, 100 * time.Millisecond}, {4, 800 * time.Millisecond},
		{5, time.Second}, {64, time.Second}, {1 << 20, time.Second},
	} {
		for range 200 {
			d := backoff(tc.attempt, least, most)
			if d < tc.ceil/2 || d > tc.ceil {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", tc.attempt, d, tc.ceil/2, tc.ceil)
			}
		}
	}
}
